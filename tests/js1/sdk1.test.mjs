// The first npm SDK generation (e2b 1.0.5, @e2b/code-interpreter 1.0.4) in
// debug mode, which always talks to localhost:49983 and :49999. Run through
// pytest (tests/sdk1/test_js1.py), which starts the daemon on those ports.
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox } from '@e2b/code-interpreter'

let sbx
before(async () => {
  sbx = await Sandbox.create({ debug: true })
})

const dir = `/home/user/js1-${process.pid}-${Date.now()}`
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

test('files: write, read, list, makeDir, rename, exists, remove', async () => {
  assert.equal(await sbx.files.makeDir(dir), true)
  const written = await sbx.files.write(`${dir}/a.txt`, 'one')
  assert.equal(written.path, `${dir}/a.txt`)
  assert.equal(await sbx.files.read(`${dir}/a.txt`), 'one')
  await sbx.files.makeDir(`${dir}/sub`)
  const listed = (await sbx.files.list(dir)).map((e) => `${e.name}:${e.type}`).sort()
  assert.deepEqual(listed, ['a.txt:file', 'sub:dir'])
  const moved = await sbx.files.rename(`${dir}/a.txt`, `${dir}/sub/b.txt`)
  assert.equal(moved.path, `${dir}/sub/b.txt`)
  assert.equal(await sbx.files.exists(`${dir}/sub/b.txt`), true)
  await sbx.files.remove(`${dir}/sub`)
  assert.equal(await sbx.files.exists(`${dir}/sub`), false)
})

test('watchDir sees a new file', async () => {
  await sbx.files.makeDir(`${dir}-w`)
  const seen = []
  const handle = await sbx.files.watchDir(`${dir}-w`, (e) => seen.push(`${e.name}:${e.type}`))
  await sbx.files.write(`${dir}-w/new.txt`, 'x')
  for (let i = 0; i < 50 && !seen.includes('new.txt:create'); i++) await sleep(100)
  await handle.stop()
  assert.ok(seen.includes('new.txt:create'), seen.join(','))
})

test('commands: output callbacks, envs, exit codes, background kill', async () => {
  const out = []
  const result = await sbx.commands.run('echo hi; echo $X', { envs: { X: 'y' }, onStdout: (d) => out.push(d) })
  assert.equal(result.stdout, 'hi\ny\n')
  assert.equal(out.join(''), 'hi\ny\n')
  await assert.rejects(sbx.commands.run('exit 4'), (err) => err.exitCode === 4)
  const background = await sbx.commands.run('sleep 600', { background: true })
  assert.equal(await sbx.commands.kill(background.pid), true)
})

test('pty', async () => {
  const chunks = []
  const terminal = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => chunks.push(Buffer.from(d)) })
  await sbx.pty.sendInput(terminal.pid, new TextEncoder().encode('echo pty-$((40 + 2)); exit\n'))
  await terminal.wait()
  assert.match(Buffer.concat(chunks).toString(), /pty-42/)
})

test('runCode: state, errors, rich results, contexts', async () => {
  await sbx.runCode('x = 41')
  assert.equal((await sbx.runCode('x + 1')).text, '42')
  assert.equal((await sbx.runCode('1 / 0')).error.name, 'ZeroDivisionError')
  const chart = await sbx.runCode('import matplotlib.pyplot as plt; plt.plot([1, 2]); plt.show()')
  assert.ok(chart.results[0].png)
  const context = await sbx.createCodeContext({ cwd: '/tmp' })
  assert.equal((await sbx.runCode('import os; os.getcwd()', { context })).text, '/tmp')
})
