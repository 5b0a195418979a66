import { defineConfig } from 'vite'
import react from '@vitejs/plugin-react'

// The app runs inside a sandboxd sandbox and is reached through the
// preview proxy at http(s)://<id>.<preview_domain>[:port]/.
//
// Hot reload: Vite's client opens its WebSocket to the page's own host and
// port (location.host) unless server.ws.host/port/clientPort are set, and
// the preview proxy forwards that WebSocket upgrade to port 3000 here, so
// the defaults are right and none of them is set. SANDBOXD_PREVIEW_PORT
// forces the port the browser should use instead, for a proxy in front of
// sandboxd that rewrites it. (Vite 8 reads these from server.ws; the older
// server.hmr.* spelling is deprecated.)
const previewPort = Number(process.env.SANDBOXD_PREVIEW_PORT) || undefined

export default defineConfig({
  plugins: [react()],
  server: {
    host: '0.0.0.0',
    port: 3000,
    strictPort: true,
    // Preview hosts are <id>.<preview_domain>, unknown in advance.
    allowedHosts: true,
    ...(previewPort ? { ws: { clientPort: previewPort } } : {}),
  },
  preview: {
    host: '0.0.0.0',
    port: 3000,
    strictPort: true,
    allowedHosts: true,
  },
})
