#!/usr/bin/env python3
"""scripts/install.sh in a fresh Debian 12 root filesystem, as a new user
would run it (issue 9, item 2).

The root filesystem is mmdebstrap's minbase of bookworm with the packages
scripts/install-deps.sh lists (but one, so install.sh really runs apt-get),
from Debian's mirror only, built once per machine under
/var/cache/sandboxd-test/rootfs-bookworm (again when the list changes).
Each run gets a fresh copy of it (an overlay: the cache stays pristine),
the source tree copied in, proc/sys/dev mounted (always unmounted after),
and runs install.sh in it with chroot, as root, with --no-image --no-start
(no dockerd, no systemd in there). The build directory is kept between runs
in /var/cache/sandboxd-test/build-bookworm, so only the first run compiles
everything; install.sh still configures, makes and installs each time.

Checked: bad arguments, not root and an unsupported OS are refused with a
clear message; the program, agentd and the unit are installed (the unit
passes systemd-analyze verify); the config is 0600 with the key's hash
only, the preview secret 0600; the key is printed once and works against
the installed daemon, started in the chroot on a loopback port in a network
namespace of its own; the DNS records and the certbot command are printed;
the skips are reported; a re-run keeps config, key and secret byte for byte
and prints no key; --uninstall keeps data_dir and the config, --purge
removes them; the systemd branch against a systemctl stand-in.

Then the same tree in another fresh copy booted with systemd as PID 1
(systemd-nspawn, loopback only; Docker replaced by a stand-in unit): a real
`systemctl start` of the Type=notify unit with all its hardening, the key
against the service, `systemctl reload`, a re-run restarting it, and
--uninstall stopping and removing it (skipped with a note without
systemd-nspawn).

Exits 77 when it cannot run (not root, no mmdebstrap, no mirror). Prints
"N passed, N failed".
"""
import fcntl
import hashlib
import os
import re
import socket
import stat
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Runner, TEST_IMAGE, TOP_SRC, ensure_docker, ensure_test_image, free_port  # noqa: E402

CACHE = os.environ.get("SANDBOXD_TEST_CACHE", "/var/cache/sandboxd-test")
ROOTFS = os.path.join(CACHE, "rootfs-bookworm")
BUILD_CACHE = os.path.join(CACHE, "build-bookworm")
SRC = "/usr/src/sandboxd"          # where the tree goes in the chroot
DOMAIN = "preview.example.com"
EMAIL = "ops@example.com"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
SECURITY = os.environ.get("DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security")
# Left out of the cached root filesystem on purpose, so that install.sh
# really runs apt-get in it (a small package).
LEFT_OUT = "busybox-static"
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"


# What a VPS has besides: systemd as its init (test_systemd_boot boots it).
VPS_PACKAGES = ["systemd", "systemd-sysv"]


def rootfs_packages():
    out = subprocess.run([os.path.join(TOP_SRC, "scripts", "install-deps.sh"), "--list"],
                         capture_output=True, text=True, check=True, env={"PATH": os.environ["PATH"]}).stdout
    return sorted(set(p for p in out.split() if p != LEFT_OUT) | set(VPS_PACKAGES))


def ensure_rootfs():
    """The cached fresh root filesystem: mmdebstrap's minbase with what
    install-deps.sh lists (but LEFT_OUT). Built once per machine, again when
    the list changes; built beside and renamed, so a half-made one is never
    used. Returns None, or why it cannot be had."""
    pkgs = rootfs_packages()
    stamp = "bookworm minbase v2 %s %s\n" % (MIRROR, " ".join(pkgs))
    try:
        with open(os.path.join(ROOTFS, ".sandboxd-test-stamp")) as f:
            if f.read() == stamp:
                return None
    except OSError:
        pass
    if shutil.which("mmdebstrap") is None:
        return "mmdebstrap is not installed (scripts/install-deps.sh installs it)"
    os.makedirs(CACHE, exist_ok=True)
    tmp = ROOTFS + ".new"
    shutil.rmtree(tmp, ignore_errors=True)
    print("  note  building %s with mmdebstrap (once per machine)" % ROOTFS, flush=True)
    t0 = time.time()
    # The apt lists stay: install.sh's apt-get then needs only a small update.
    r = subprocess.run(["mmdebstrap", "--mode=root", "--variant=minbase", "--quiet",
                        "--skip=cleanup/apt/lists",
                        "--include=" + ",".join(pkgs), "bookworm", tmp,
                        "deb %s bookworm main" % MIRROR,
                        "deb %s bookworm-updates main" % MIRROR,
                        "deb %s bookworm-security main" % SECURITY],
                       capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        return "mmdebstrap failed (exit %d): %s" % (r.returncode, r.stderr[-600:])
    with open(os.path.join(tmp, ".sandboxd-test-stamp"), "w") as f:
        f.write(stamp)
    shutil.rmtree(ROOTFS, ignore_errors=True)
    os.rename(tmp, ROOTFS)
    print("  note  root filesystem built in %.0f s" % (time.time() - t0), flush=True)
    return None




def run(cmd, timeout=120, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


class Chroot:
    """A fresh copy of the cached root filesystem with the source tree in
    it and proc, sys and dev mounted; everything undone by close(), also
    after a failure."""

    def __init__(self):
        self.mounts = []
        self.work = tempfile.mkdtemp(prefix="sbx-install-", dir=CACHE)
        self.root = os.path.join(self.work, "root")
        os.makedirs(self.root)
        try:
            self.setup()
        except BaseException:
            self.close()
            raise

    def mount(self, *args):
        target = args[-1]
        r = run(["mount", *args])
        if r.returncode != 0:
            raise RuntimeError("mount %s: %s" % (" ".join(args), r.stderr.strip()))
        self.mounts.append(target)

    def setup(self):
        upper, wdir = os.path.join(self.work, "upper"), os.path.join(self.work, "wdir")
        os.makedirs(upper)
        os.makedirs(wdir)
        r = run(["mount", "-t", "overlay", "overlay", "-o",
                 "lowerdir=%s,upperdir=%s,workdir=%s" % (ROOTFS, upper, wdir), self.root])
        if r.returncode == 0:
            self.mounts.append(self.root)
        else:
            print("  note  no overlayfs (%s): copying the root filesystem" % r.stderr.strip(), flush=True)
            r = run(["cp", "-a", ROOTFS + "/.", self.root], timeout=600)
            if r.returncode != 0:
                raise RuntimeError("cp -a rootfs: %s" % r.stderr)
        self.mount("-t", "proc", "proc", self.path("/proc"))
        self.mount("-t", "sysfs", "sysfs", self.path("/sys"))
        self.mount("--bind", "/dev", self.path("/dev"))
        self.mount("--bind", "/dev/pts", self.path("/dev/pts"))
        self.copy_tree()
        # The machine's own trust store: where its network's TLS goes
        # through an interception proxy (as on CI), the fresh root
        # filesystem's Debian CAs alone would make npm retry for a
        # minute and fail, where the host it stands for would not.
        if os.path.exists(HOST_CA):
            shutil.copyfile(HOST_CA, self.path(HOST_CA))
        # The build directory survives between runs; a new root filesystem
        # (new compiler, new libraries) starts it afresh.
        stamp = open(os.path.join(ROOTFS, ".sandboxd-test-stamp")).read()
        bstamp = os.path.join(BUILD_CACHE, ".sandboxd-test-stamp")
        try:
            fresh = open(bstamp).read() != stamp
        except OSError:
            fresh = True
        if fresh or os.environ.get("SANDBOXD_INSTALL_TEST_FRESH_BUILD") == "1":
            shutil.rmtree(BUILD_CACHE, ignore_errors=True)
            os.makedirs(BUILD_CACHE)
            with open(bstamp, "w") as f:
                f.write(stamp)
        os.makedirs(self.path(SRC + "/build"), exist_ok=True)
        self.mount("--bind", BUILD_CACHE, self.path(SRC + "/build"))

    def copy_tree(self):
        """The tree as a clone has it (tracked and new files, nothing that
        git ignores: no build output, no configure), with its mtimes, so the
        kept build directory rebuilds only what changed."""
        dest = self.path(SRC)
        os.makedirs(dest)
        r = run(["git", "-C", TOP_SRC, "ls-files", "-z", "--cached", "--others", "--exclude-standard"])
        if r.returncode == 0:
            files = [f for f in r.stdout.split("\0") if f and os.path.lexists(os.path.join(TOP_SRC, f))]
            tar = subprocess.Popen(["tar", "-C", TOP_SRC, "--null", "-T", "-", "-cf", "-"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            untar = subprocess.Popen(["tar", "-C", dest, "-xf", "-"], stdin=tar.stdout)
            tar.stdout.close()
            tar.stdin.write("\0".join(files).encode())
            tar.stdin.close()
            if tar.wait(timeout=300) != 0 or untar.wait(timeout=300) != 0:
                raise RuntimeError("copying the source tree failed")
        else:
            r = run(["tar", "-C", TOP_SRC, "--exclude=./build*", "--exclude=./base-image/out",
                     "--exclude=.git", "-cf", self.work + "/src.tar", "."])
            if r.returncode != 0 or run(["tar", "-C", dest, "-xf", self.work + "/src.tar"]).returncode != 0:
                raise RuntimeError("copying the source tree failed")

    def drop_kernel_fs(self):
        """Unmount proc, sys and dev (before a boot: nspawn mounts its own)."""
        kfs = [self.path(p) for p in ("/proc", "/sys", "/dev", "/dev/pts")]
        for m in reversed([m for m in self.mounts if m in kfs]):
            if run(["umount", m]).returncode != 0:
                run(["umount", "-l", m])
            self.mounts.remove(m)

    def path(self, p):
        return self.root + p

    def sh(self, script, timeout=120, user=None):
        """Run script with sh in the chroot, with a login's clean
        environment, as root unless user ("uid:gid")."""
        cmd = ["chroot"]
        if user:
            cmd.append("--userspec=" + user)
        cmd += [self.root, "/usr/bin/env", "-i", "PATH=" + PATH, "HOME=/root", "LANG=C.UTF-8",
                "TERM=dumb", "/bin/sh", "-c", script]
        return run(cmd, timeout=timeout)

    def install(self, args, timeout=120):
        return self.sh("cd %s && scripts/install.sh %s" % (SRC, args), timeout=timeout)

    def close(self):
        for m in reversed(self.mounts):
            if run(["umount", m]).returncode != 0:
                run(["umount", "-l", m])
        self.mounts = []
        with open("/proc/self/mounts") as f:
            left = [l.split()[1] for l in f if l.split()[1].startswith(self.work)]
        for m in reversed(left):
            run(["umount", "-l", m])
        shutil.rmtree(self.work, ignore_errors=True)


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_bad_input(t, ch):
    r = ch.install("--help")
    t.check(r.returncode == 0 and "--domain DOMAIN" in r.stdout and "--uninstall" in r.stdout
            and "--no-image" in r.stdout and "--no-start" in r.stdout, "--help: %r" % r.stdout[:300])
    cases = [("", "--domain is required"),
             ("--domain", "--domain needs a value"),
             ("--domain '*.preview.example.com'", "without \"*.\""),
             ("--domain https://preview.example.com", "not a URL"),
             ("--domain localhost", "not a DNS name"),
             ("--domain bad_name.example.com", "not a DNS name"),
             ("--domain -x.example.com", "not a DNS name"),
             ("--domain %s --api-host api.%s" % (DOMAIN, DOMAIN), "is a preview name"),
             ("--domain %s --email nobody" % DOMAIN, "not an e-mail address"),
             ("--domain %s --listen localhost:80" % DOMAIN, "not an address:port"),
             ("--domain %s --listen 127.0.0.1:99999" % DOMAIN, "not 1-65535"),
             ("--domain %s --jobs 0" % DOMAIN, "not a positive number"),
             ("--domain %s --frobnicate" % DOMAIN, "unknown argument"),
             ("--purge", "--purge goes with --uninstall")]
    for args, msg in cases:
        r = ch.install(args)
        t.check(r.returncode == 2 and msg in r.stderr and not r.stdout.strip(),
                "install.sh %s: exit 2 saying %r: %d %r" % (args, msg, r.returncode, r.stderr))
    r = ch.sh("cd %s && scripts/install.sh --domain %s" % (SRC, DOMAIN), user="65534:65534")
    t.check(r.returncode == 1 and "run me as root" in r.stderr, "not root: %d %r" % (r.returncode, r.stderr))
    osr = ch.path("/etc/os-release")
    orig = open(osr).read() if os.path.exists(osr) else None
    if os.path.islink(osr):
        os.unlink(osr)
    try:
        with open(osr, "w") as f:
            f.write('PRETTY_NAME="Fedora Linux 41"\nID=fedora\nVERSION_ID=41\n')
        r = ch.install("--domain " + DOMAIN)
        t.check(r.returncode == 1 and "unsupported OS: Fedora Linux 41" in r.stderr
                and "--skip-os-check" in r.stderr, "unsupported OS: %d %r" % (r.returncode, r.stderr))
    finally:
        with open(osr, "w") as f:
            f.write(orig or "")
    t.check(not os.path.exists(ch.path("/etc/sandboxd")) and not os.path.exists(ch.path("/usr/local/bin/sandboxd")),
            "refused runs left nothing behind")


KEY_RE = re.compile(r"\b[0-9a-f]{64}\b")


def first_install(t, ch, port):
    t0 = time.time()
    r = ch.install("--domain %s --email %s --listen 127.0.0.1:%d --no-image --no-start --jobs 2"
                   % (DOMAIN, EMAIL, port), timeout=2400)
    out = r.stdout + r.stderr
    print("  note  first install: %.0f s" % (time.time() - t0), flush=True)
    if os.environ.get("SANDBOXD_INSTALL_TEST_VERBOSE") == "1":
        print(KEY_RE.sub("<the key>", out))
    if not t.check(r.returncode == 0, "install.sh exits 0: %s" % out[-2000:]):
        return None
    t.check("==> packages" in out and "==> dependencies present" in out, "the packages step ran")
    t.check("installing: " + LEFT_OUT in out, "install-deps.sh apt-installed what was missing (%s)" % LEFT_OUT)
    t.check("sandbox image: skipped (--no-image)" in out, "the image skip is reported")
    t.check("systemd is not running here (PID 1 is" in out and "sandboxd serve" in out,
            "no systemd: said so, and how to start by hand: %r" % out[-1500:])
    t.check("(--no-start: it would not have been started anyway)" in out, "--no-start is reported")
    # The program.
    for p in ("/usr/local/bin/sandboxd", "/usr/local/libexec/sandboxd/agentd"):
        t.check(os.access(ch.path(p), os.X_OK), "%s installed" % p)
    r2 = run(["ldd", ch.path("/usr/local/libexec/sandboxd/agentd")])
    t.check(r2.returncode != 0 and "not a dynamic executable" in (r2.stdout + r2.stderr), "agentd is static")
    r2 = ch.sh("sandboxd version")
    t.check(r2.returncode == 0 and r2.stdout.startswith("sandboxd "), "the installed sandboxd runs: %r" % r2.stdout)
    for p in ("/usr/local/share/man/man8/sandboxd.8", "/usr/local/share/man/man5/sandboxd.conf.5",
              "/usr/local/share/doc/sandboxd/examples/sandboxd.conf.example"):
        t.check(os.path.isfile(ch.path(p)), "%s installed" % p)
    # The console needs the npm registry (or npm's cache) at build time:
    # without it install.sh warns and goes on, and that is not this test's.
    try:
        log = open(os.path.join(BUILD_CACHE, "install.log")).read()
    except OSError:
        log = ""
    if "npm ci failed" in log or "ENOTCACHED" in log:
        print("  skip  the console: npm could not install its build tools here: %s"
              % " ".join(l for l in log.splitlines() if "npm" in l.lower())[-300:], flush=True)
    else:
        t.check(os.path.isfile(ch.path("/usr/local/share/sandboxd/console/index.html")),
                "the console is built and installed: %s" % log[-600:])
    # The unit, enabled for a systemd boot.
    unit = ch.path("/usr/local/lib/systemd/system/sandboxd.service")
    t.check(os.path.isfile(unit) and "ExecStart=/usr/local/bin/sandboxd serve" in open(unit).read(),
            "the unit is installed with the installed path")
    wants = ch.path("/etc/systemd/system/multi-user.target.wants/sandboxd.service")
    t.check(os.path.islink(wants) and os.readlink(wants) == "/usr/local/lib/systemd/system/sandboxd.service",
            "the unit is enabled (multi-user.target.wants)")
    if shutil.which("systemd-analyze"):
        r2 = run(["systemd-analyze", "verify", unit])
        # ExecStart names /usr/local/bin/sandboxd, which is in the chroot,
        # not necessarily on this host.
        errs = [l for l in (r2.stdout + r2.stderr).splitlines()
                if l and "/usr/local/bin/sandboxd" not in l and "is not executable" not in l]
        t.check(not errs, "systemd-analyze verify on the installed unit: %r" % errs)
    else:
        print("  skip  systemd-analyze is not installed: the unit is not verified")
    # The config and the secrets.
    conf = ch.path("/etc/sandboxd/sandboxd.conf")
    st = os.stat(conf)
    t.check(mode(conf) == 0o600 and st.st_uid == 0, "the config is 0600 root: %o" % mode(conf))
    text = open(conf).read()
    for line in ("listen         = 127.0.0.1:%d" % port, "preview_domain = " + DOMAIN,
                 "public_url     = http://%s:%d" % (DOMAIN, port), "data_dir       = /var/lib/sandboxd",
                 "[api_key admin]", "admin       = true", "#tls_cert       = /etc/sandboxd/tls/fullchain.pem"):
        t.check(line in text, "the config has %r" % line)
    mi = re.search(r"^instance       = (sbx-[0-9a-f]{12})$", text, re.M)
    r2 = ch.sh("printf 'data_dir = /var/lib/sandboxd\\n' >/tmp/dd.conf; sandboxd status --json -c /tmp/dd.conf; true")
    t.check(mi is not None and '"instance":"%s"' % mi.group(1) in r2.stdout,
            "the config names the instance the daemon derives from data_dir: %r" % r2.stdout[:300])
    m = re.search(r"^secret_hash = sha256:([0-9a-f]{64})$", text, re.M)
    t.check(m is not None, "the config has the key's secret_hash")
    t.check(re.search(r"^\s*secret\s*=", text, re.M) is None, "and no clear-text secret")
    keys = KEY_RE.findall(r.stdout)
    t.check(len(keys) == 1, "exactly one key printed, once: %d" % len(keys))
    key = keys[0] if keys else None
    t.check(key is not None and m is not None and hashlib.sha256(key.encode()).hexdigest() == m.group(1),
            "the printed key is the one whose hash the config holds")
    t.check(key is not None and key not in text, "the key itself is not in the config")
    sec = ch.path("/var/lib/sandboxd/preview-secret")
    t.check(os.path.isfile(sec) and os.path.getsize(sec) == 32 and mode(sec) == 0o600,
            "the preview secret: 32 bytes, 0600")
    t.check(mode(ch.path("/var/lib/sandboxd")) == 0o711, "data_dir is 0711")
    t.check(mode(ch.path("/etc/sandboxd/tls")) == 0o700, "/etc/sandboxd/tls is 0700")
    hook = ch.path("/etc/sandboxd/tls/deploy-hook")
    t.check(os.path.isfile(hook) and mode(hook) == 0o755 and "RENEWED_LINEAGE" in open(hook).read()
            and "systemctl reload sandboxd" in open(hook).read(), "the certbot deploy hook, 0755")
    r2 = run(["sh", "-n", hook])
    t.check(r2.returncode == 0, "the hook is valid sh: %r" % r2.stderr)
    r2 = ch.sh("sandboxd check-config -c /etc/sandboxd/sandboxd.conf")
    t.check(r2.returncode == 0, "check-config on the written config: %r" % (r2.stdout + r2.stderr))
    # What the operator is told.
    t.check("API:      http://%s:%d" % (DOMAIN, port) in r.stdout, "the API URL is printed")
    t.check("Previews: http://<id>.%s:%d/" % (DOMAIN, port) in r.stdout, "the preview URLs are printed")
    t.check(re.search(r"^\s+%s\.\s+A\s+\S+" % re.escape(DOMAIN), r.stdout, re.M) is not None,
            "the DNS record of the API host is printed")
    t.check(re.search(r"^\s+\*\.%s\.\s+A\s+\S+" % re.escape(DOMAIN), r.stdout, re.M) is not None,
            "the wildcard DNS record is printed")
    for s in ("certbot certonly --dns-cloudflare", "python3-certbot-dns-cloudflare",
              "-d '*.%s' -d %s" % (DOMAIN, DOMAIN), "-m %s --agree-tos" % EMAIL,
              "--deploy-hook /etc/sandboxd/tls/deploy-hook", "DNS-01", "SIGHUP",
              "public_url = https://" + DOMAIN):
        t.check(s in r.stdout, "the TLS instructions say %r" % s)
    return key


def daemon_with_key(t, ch, port, key):
    """The installed sandboxd, in the chroot, in a network namespace of its
    own (its nftables and sockets touch nothing here), without Docker: it
    answers /healthz and the API with the printed key, refuses another."""
    script = r"""
set -u
ip link set lo up
chroot %(root)s /usr/bin/env -i PATH=%(path)s /usr/local/bin/sandboxd serve >%(log)s 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid' EXIT
i=0
until curl -s -o /dev/null http://127.0.0.1:%(port)d/healthz; do
	i=$((i + 1)); [ $i -lt 100 ] || { echo "no answer"; exit 1; }
	sleep 0.1
done
echo "healthz $(curl -s -o /dev/null -w '%%{http_code}' http://127.0.0.1:%(port)d/healthz)"
echo "good $(curl -s -o /dev/null -w '%%{http_code}' -H 'Authorization: Bearer %(key)s' http://127.0.0.1:%(port)d/v1/sandboxes)"
echo "bad $(curl -s -o /dev/null -w '%%{http_code}' -H 'Authorization: Bearer %(bad)s' http://127.0.0.1:%(port)d/v1/sandboxes)"
echo "none $(curl -s -o /dev/null -w '%%{http_code}' http://127.0.0.1:%(port)d/v1/sandboxes)"
""" % {"root": ch.root, "path": PATH, "log": ch.work + "/daemon.log", "port": port, "key": key,
       "bad": "0" * 64}
    r = run(["unshare", "--net", "sh", "-c", script], timeout=60)
    log = open(ch.work + "/daemon.log").read() if os.path.exists(ch.work + "/daemon.log") else ""
    if r.returncode != 0 and "unshare" in r.stderr:
        print("  skip  no network namespace here (%s): the daemon is not started" % r.stderr.strip())
        return
    got = dict(l.split(" ", 1) for l in r.stdout.splitlines() if " " in l)
    t.check(got.get("healthz") in ("200", "503"), "the installed daemon answers /healthz: %r %r" % (r.stdout, log[-800:]))
    t.check(got.get("good") == "200", "GET /v1/sandboxes with the printed key: 200: %r" % got)
    t.check(got.get("bad") == "401" and got.get("none") == "401", "another key, or none: 401: %r" % got)
    t.check(key not in log, "the daemon's log does not hold the key")
    t.check(os.path.isfile(ch.path("/var/lib/sandboxd/sandboxd.db")), "the daemon made its store in data_dir")


def rerun(t, ch, port):
    files = ["/etc/sandboxd/sandboxd.conf", "/var/lib/sandboxd/preview-secret", "/etc/sandboxd/tls/deploy-hook",
             "/var/lib/sandboxd/sandboxd.db"]
    before = {f: open(ch.path(f), "rb").read() for f in files if os.path.exists(ch.path(f))}
    bin_before = os.stat(ch.path("/usr/local/bin/sandboxd")).st_mtime
    with open(ch.path("/var/lib/sandboxd/workspaces-marker"), "w") as f:
        f.write("user data")
    t0 = time.time()
    r = ch.install("--domain %s --email %s --listen 127.0.0.1:%d --no-image --no-start --jobs 1"
                   % (DOMAIN, EMAIL, port), timeout=1800)
    print("  note  re-run: %.0f s" % (time.time() - t0), flush=True)
    out = r.stdout + r.stderr
    t.check(r.returncode == 0, "the re-run exits 0: %s" % out[-1500:])
    t.check("config: keeping /etc/sandboxd/sandboxd.conf" in out and "preview secret: keeping" in out,
            "the re-run says it keeps the config and the secret")
    after = {f: open(ch.path(f), "rb").read() for f in before}
    t.check(after == before, "config, secret, hook and store unchanged byte for byte: %r"
            % [f for f in before if before[f] != after[f]])
    t.check(KEY_RE.search(r.stdout) is None, "no key printed on a re-run")
    t.check("sandboxd key create admin" in r.stdout, "the re-run says how to make another key")
    t.check(os.path.exists(ch.path("/var/lib/sandboxd/workspaces-marker")), "data_dir kept")
    t.check(os.stat(ch.path("/usr/local/bin/sandboxd")).st_mtime >= bin_before, "the program was reinstalled")


def uninstall(t, ch):
    r = ch.install("--uninstall")
    t.check(r.returncode == 0 and "sandboxd is uninstalled" in r.stdout, "--uninstall exits 0: %r" % (r.stdout + r.stderr))
    for p in ("/usr/local/bin/sandboxd", "/usr/local/libexec/sandboxd", "/usr/local/lib/systemd/system/sandboxd.service",
              "/etc/systemd/system/multi-user.target.wants/sandboxd.service", "/usr/local/share/man/man8/sandboxd.8"):
        t.check(not os.path.lexists(ch.path(p)), "--uninstall removed %s" % p)
    for p in ("/var/lib/sandboxd/sandboxd.db", "/var/lib/sandboxd/preview-secret", "/var/lib/sandboxd/workspaces-marker",
              "/etc/sandboxd/sandboxd.conf"):
        t.check(os.path.exists(ch.path(p)), "--uninstall kept %s" % p)
    # --purge removes this server's containers and network. The program is
    # gone by now, so it must find the instance in the config. A label of
    # the test's own (not the one of /var/lib/sandboxd, which a real daemon
    # on this host might use), and this host's dockerd through its socket.
    inst = "sbx-installtest-" + hashlib.sha256(ch.work.encode()).hexdigest()[:8]
    conf = ch.path("/etc/sandboxd/sandboxd.conf")
    text = open(conf).read()
    with open(conf, "w") as f:
        f.write(re.sub(r"^instance .*$", "instance       = " + inst, text, flags=re.M))
    cid = net = None
    if ensure_docker():
        ensure_test_image()
        label = "io.sandboxd.instance=" + inst
        r = run(["docker", "network", "create", "--label", label, inst])
        net = r.stdout.strip() if r.returncode == 0 else None
        r = run(["docker", "create", "--label", label, "--network", inst, TEST_IMAGE, "sleep", "600"])
        cid = r.stdout.strip() if r.returncode == 0 else None
        t.check(cid and net, "a container and a network of the instance: %r" % r.stderr)
        open(ch.path("/run/docker.sock"), "w").close()
        ch.mount("--bind", "/var/run/docker.sock", ch.path("/run/docker.sock"))
    else:
        print("  skip  no dockerd: --purge is not shown removing containers")
    try:
        r = ch.install("--uninstall --purge")
        t.check(r.returncode == 0 and "purging /var/lib/sandboxd and /etc/sandboxd" in r.stdout,
                "--uninstall --purge exits 0: %r" % (r.stdout + r.stderr))
        t.check(not os.path.exists(ch.path("/var/lib/sandboxd")) and not os.path.exists(ch.path("/etc/sandboxd")),
                "--purge removed data_dir and /etc/sandboxd")
        if cid:
            t.check("removing the sandbox containers and network of instance " + inst in r.stdout,
                    "--purge says it removes the instance's containers: %r" % r.stdout)
            t.check(run(["docker", "inspect", cid]).returncode != 0, "--purge removed the instance's container")
            t.check(run(["docker", "network", "inspect", inst]).returncode != 0, "and its network")
    finally:
        if cid:
            run(["docker", "rm", "-f", cid])
        if net:
            run(["docker", "network", "rm", inst])


FAKE_SYSTEMCTL = """#!/bin/sh
# A stand-in for systemctl: records each call; "is-active" says yes.
echo "$*" >>/tmp/systemctl.calls
exit 0
"""


def systemd_flow(t, ch, port):
    """Where systemd runs (faked here: /run/systemd/system and a systemctl
    that records its calls, since systemd is not PID 1 on this machine):
    the first install enables and starts docker and sandboxd, a re-run
    restarts sandboxd, --no-start starts nothing, --uninstall disables and
    stops it."""
    os.makedirs(ch.path("/run/systemd/system"), exist_ok=True)
    fake = ch.path("/usr/local/sbin/systemctl")
    os.makedirs(os.path.dirname(fake), exist_ok=True)
    with open(fake, "w") as f:
        f.write(FAKE_SYSTEMCTL)
    os.chmod(fake, 0o755)
    calls = ch.path("/tmp/systemctl.calls")

    def take():
        try:
            with open(calls) as f:
                got = [l.strip() for l in f]
            os.unlink(calls)
            return got
        except FileNotFoundError:
            return []
    args = "--domain %s --listen 127.0.0.1:%d --no-image --jobs 1" % (DOMAIN, port)
    try:
        r = ch.install(args, timeout=1800)
        got = take()
        t.check(r.returncode == 0 and "Service: running" in r.stdout, "install under systemd: %r" % (r.stdout + r.stderr)[-1000:])
        for c in ("daemon-reload", "enable --quiet docker.service", "enable --quiet sandboxd.service",
                  "start docker.service", "start sandboxd.service", "is-active --quiet sandboxd.service"):
            t.check(c in got, "first install: systemctl %s: %r" % (c, got))
        t.check("restart sandboxd.service" not in got, "no restart on a first install")
        r = ch.install(args, timeout=1800)
        got = take()
        t.check(r.returncode == 0 and "restarting sandboxd on the new build" in r.stdout, "re-run restarts: %r" % r.stdout[-800:])
        t.check("restart sandboxd.service" in got and "daemon-reload" in got, "re-run: daemon-reload, restart: %r" % got)
        r = ch.install(args + " --no-start", timeout=1800)
        got = take()
        t.check(r.returncode == 0 and "service start: skipped (--no-start)" in r.stdout, "--no-start: %r" % r.stdout[-800:])
        t.check(not [c for c in got if c.startswith(("start", "restart"))] and "enable --quiet sandboxd.service" in got,
                "--no-start enables, starts nothing: %r" % got)
        r = ch.install("--uninstall")
        got = take()
        t.check(r.returncode == 0 and "disable --now sandboxd.service" in got, "--uninstall: disable --now: %r" % got)
        t.check(os.path.exists(ch.path("/var/lib/sandboxd/preview-secret")), "--uninstall under systemd keeps data_dir")
    finally:
        os.unlink(fake)
        shutil.rmtree(ch.path("/run/systemd"), ignore_errors=True)


DOCKER_STUB = """[Unit]
Description=stand-in for Docker: the booted test system has none
[Service]
Type=oneshot
ExecStart=/bin/true
RemainAfterExit=yes
"""


class Booted:
    """A fresh copy of the root filesystem booted with systemd as PID 1
    (systemd-nspawn, its own network namespace with only loopback), as a
    VPS boots. Docker cannot run in there: docker.service is replaced by a
    stand-in, and sandboxd serves without Docker, as it does while Docker
    is down. close() powers it off (SIGRTMIN+4 to its systemd, then
    SIGKILL to the nspawn we started) and removes the copy."""

    def __init__(self):
        self.proc = None
        self.ch = Chroot()
        try:
            # Its network namespace has only loopback, so what the chroot
            # test fetched with apt is put in beforehand.
            r = self.ch.sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends %s"
                           % LEFT_OUT, timeout=300)
            if r.returncode != 0:
                raise RuntimeError("apt-get install %s: %s" % (LEFT_OUT, r.stderr[-500:]))
            self.ch.drop_kernel_fs()
            with open(self.ch.path("/etc/systemd/system/docker.service"), "w") as f:
                f.write(DOCKER_STUB)
            # Nor Docker's socket unit: systemd would accept on
            # /run/docker.sock for the stand-in, which never answers, and
            # every Docker call would wait out its timeout.
            os.symlink("/dev/null", self.ch.path("/etc/systemd/system/docker.socket"))
            self.log = open(self.ch.work + "/boot.log", "w")
            self.proc = subprocess.Popen(
                ["systemd-nspawn", "--quiet", "--directory", self.ch.root, "--register=no", "--keep-unit",
                 "--private-network", "--boot", "--console=pipe"],
                stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
            self.pid1 = wait_until(self.find_pid1, 30)
            if not self.pid1:
                raise RuntimeError("no systemd came up in the container: %s" % self.boot_log())
            state = wait_until(lambda: self.sh("systemctl is-system-running").stdout.strip()
                               in ("running", "degraded") and "up", 60)
            if not state:
                raise RuntimeError("the container's systemd did not finish booting: %r"
                                   % self.sh("systemctl is-system-running; systemctl --failed --no-pager").stdout)
        except BaseException:
            self.close()
            raise

    def boot_log(self):
        try:
            return open(self.ch.work + "/boot.log").read()[-800:]
        except OSError:
            return ""

    def find_pid1(self):
        if self.proc.poll() is not None:
            raise RuntimeError("systemd-nspawn exited %d: %s" % (self.proc.returncode, self.boot_log()))
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open("/proc/%s/stat" % d) as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    if int(fields[1]) == self.proc.pid and open("/proc/%s/comm" % d).read().strip() == "systemd":
                        return int(d)
                except (OSError, IndexError, ValueError):
                    pass
        return None

    def sh(self, script, timeout=60):
        return run(["nsenter", "-t", str(self.pid1), "-a", "/usr/bin/env", "-i", "PATH=" + PATH,
                    "HOME=/root", "LANG=C.UTF-8", "TERM=dumb", "/bin/sh", "-c", script], timeout=timeout)

    def close(self):
        if self.proc is not None and self.proc.poll() is None:
            try:
                if getattr(self, "pid1", None):
                    os.kill(self.pid1, signal.SIGRTMIN + 4)
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.ch.close()


def wait_until(fn, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.2)
    return None


def test_systemd_boot(t, port):
    """install.sh on a system booted with systemd: the service is enabled and
    started (Type=notify: systemctl start returns once READY=1, with every
    hardening setting of the unit applied), answers the printed key,
    reloads, is restarted by a re-run, and --uninstall stops and removes
    it but keeps data_dir."""
    if shutil.which("systemd-nspawn") is None:
        print("  skip  systemd-nspawn is not installed (systemd-container): no booted system")
        return
    try:
        b = Booted()
    except Exception as e:
        print("  skip  cannot boot the root filesystem with systemd-nspawn: %s" % e)
        return
    try:
        args = "--domain %s --listen 127.0.0.1:%d --no-image --jobs 1" % (DOMAIN, port)
        r = b.sh("cd %s && scripts/install.sh %s" % (SRC, args), timeout=1800)
        out = r.stdout + r.stderr
        if not t.check(r.returncode == 0, "install.sh under systemd exits 0: %s" % out[-2000:]):
            return
        t.check("==> starting sandboxd" in out and "Service: running (systemctl status sandboxd)" in out,
                "it says it started the service: %r" % out[-1500:])
        t.check("systemd is not running" not in out, "it saw systemd running")
        keys = KEY_RE.findall(r.stdout)
        t.check(len(keys) == 1, "one key printed: %d" % len(keys))
        key = keys[0] if keys else "x"
        r = b.sh("systemctl is-enabled sandboxd; systemctl is-active sandboxd; "
                 "systemctl show -p StatusText -p MainPID -p NRestarts sandboxd")
        props = dict(l.split("=", 1) for l in r.stdout.splitlines() if "=" in l)
        t.check(r.stdout.startswith("enabled\nactive\n"), "enabled and active: %r" % r.stdout)
        t.check(props.get("StatusText", "").startswith("serving"), "its STATUS= line: %r" % props)
        pid = props.get("MainPID")

        def api(k):
            return b.sh("curl -s -o /dev/null -w '%%{http_code}' -H 'Authorization: Bearer %s' "
                        "http://127.0.0.1:%d/v1/sandboxes" % (k, port)).stdout
        t.check(api(key) == "200", "the printed key works against the service")
        t.check(api("0" * 64) == "401", "another key is refused")
        r = b.sh("systemctl reload sandboxd && systemctl is-active sandboxd && "
                 "systemctl show -p MainPID --value sandboxd")
        t.check(r.returncode == 0 and r.stdout.split()[-1:] == [pid],
                "systemctl reload (SIGHUP) works and keeps the process: %r" % (r.stdout + r.stderr))
        r = b.sh("journalctl -u sandboxd --no-pager -o cat")
        t.check(key not in r.stdout, "the journal does not hold the key")
        r = b.sh("cd %s && scripts/install.sh %s" % (SRC, args), timeout=1800)
        t.check(r.returncode == 0 and "restarting sandboxd on the new build" in r.stdout,
                "a re-run restarts the service: %r" % (r.stdout + r.stderr)[-1000:])
        t.check(KEY_RE.search(r.stdout) is None, "and prints no key")
        r = b.sh("systemctl is-active sandboxd; systemctl show -p MainPID --value sandboxd")
        t.check(r.stdout.split()[:1] == ["active"] and r.stdout.split()[-1:] != [pid],
                "active again, a new process: %r" % r.stdout)
        t.check(api(key) == "200", "the same key works after the upgrade")
        r = b.sh("cd %s && scripts/install.sh --uninstall" % SRC)
        t.check(r.returncode == 0, "--uninstall: %r" % (r.stdout + r.stderr))
        r = b.sh("systemctl is-active sandboxd; systemctl cat sandboxd >/dev/null 2>&1 || echo gone")
        t.check(r.stdout.split() == ["inactive", "gone"], "the service is stopped and gone: %r" % r.stdout)
        t.check(os.path.exists(b.ch.path("/var/lib/sandboxd/sandboxd.db")), "data_dir kept")
    finally:
        b.close()


def main():
    if os.environ.get("SANDBOXD_SANITIZER_PASS") == "1":
        print("skip: the install test builds sandboxd from source in its own root "
              "filesystem, not from this build: the plain pass of run-all.sh ran it")
        return 77
    if os.geteuid() != 0:
        print("skip: test_install needs root (mmdebstrap, mount, chroot)")
        return 77
    if shutil.which("chroot") is None or shutil.which("unshare") is None:
        print("skip: chroot or unshare is missing")
        return 77
    # One run at a time per machine: the cache is shared.
    os.makedirs(CACHE, exist_ok=True)
    lock = open(os.path.join(CACHE, "lock"), "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    why = ensure_rootfs()
    if why is not None:
        print("skip: no fresh Debian 12 root filesystem: %s" % why)
        return 77
    t = Runner()
    try:
        ch = Chroot()
    except Exception as e:
        print("skip: cannot set the chroot up: %s" % e)
        return 77
    try:
        port = free_port()
        t.run(test_bad_input, ch)
        key = None

        def test_first_install(t):
            nonlocal key
            key = first_install(t, ch, port)
        t.run(test_first_install)
        if key:
            def test_daemon_with_key(t):
                daemon_with_key(t, ch, port, key)
            t.run(test_daemon_with_key)
            def test_rerun_keeps_everything(t):
                rerun(t, ch, port)
            t.run(test_rerun_keeps_everything)
            def test_uninstall_and_purge(t):
                uninstall(t, ch)
            t.run(test_uninstall_and_purge)

            def test_systemd_flow(t):
                systemd_flow(t, ch, port)
            t.run(test_systemd_flow)
    finally:
        ch.close()
    if t.failed == 0:
        t.run(test_systemd_boot, free_port())
    with open("/proc/self/mounts") as f:
        t.check(not [l for l in f if ch.work in l], "every mount of the chroot is gone")
    t.check(not os.path.exists(ch.work), "the chroot's copy is removed")
    return t.finish()


if __name__ == "__main__":
    sys.exit(main())
