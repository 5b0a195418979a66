import { useState } from 'react'

export default function App() {
  const [count, setCount] = useState(0)

  return (
    <main className="card">
      <h1>Your sandbox is ready</h1>
      <p>
        This is a Vite + React app running in <code>/workspace</code>.
        Edit <code>src/App.jsx</code> and save: the page updates by itself.
      </p>
      <button type="button" onClick={() => setCount((n) => n + 1)}>
        clicked {count} {count === 1 ? 'time' : 'times'}
      </button>
      <p className="hint">
        Node.js, npm, pnpm, Bun, Python 3, git, OpenCode and Claude Code are
        installed.
      </p>
    </main>
  )
}
