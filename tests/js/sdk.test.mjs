// The official npm SDKs against the real daemon, in debug mode.
// Run through pytest (tests/test_js_sdk.py), which passes ENVD_TEST_URL; or by
// hand: ENVD_TEST_URL=http://127.0.0.1:PORT npm test (both APIs on that port).
import { test, before } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox } from '@e2b/code-interpreter'

const url = process.env.ENVD_TEST_URL
if (!url) throw new Error('set ENVD_TEST_URL to a daemon serving both APIs on one port')

let sbx
before(async () => {
  sbx = await Sandbox.create({ debug: true, sandboxUrl: url })
})

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const unique = (name) => `/tmp/envd-js-${process.pid}-${Date.now()}-${name}`

test('the sandbox is running', async () => {
  assert.equal(await sbx.isRunning(), true)
})

test('runCode: result, stdout and stderr callbacks', async () => {
  const out = []
  const err = []
  const execution = await sbx.runCode(
    'import sys\nprint("hello")\nprint("oops", file=sys.stderr)\n40 + 2',
    { onStdout: (m) => out.push(m.line), onStderr: (m) => err.push(m.line) },
  )
  assert.equal(execution.text, '42')
  assert.deepEqual(out, ['hello\n'])
  assert.deepEqual(err, ['oops\n'])
})

test('runCode: an error', async () => {
  const execution = await sbx.runCode('raise ValueError("bad value")')
  assert.equal(execution.error.name, 'ValueError')
  assert.equal(execution.error.value, 'bad value')
})

test('runCode: a DataFrame as data, a PNG and a chart from matplotlib', async () => {
  const df = await sbx.runCode('import pandas as pd\npd.DataFrame({"a": [1, 2], "b": [3, 4]})')
  assert.deepEqual(df.results[0].data, { a: [1, 2], b: [3, 4] })
  const plot = await sbx.runCode(
    'import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [4, 5, 6])\nplt.title("T")\nplt.show()',
  )
  const result = plot.results[0]
  assert.ok(result.png.length > 100)
  assert.equal(result.chart.type, 'line')
  assert.equal(result.chart.title, 'T')
})

test('contexts: create, list, restart, remove', async () => {
  const ctx = await sbx.createCodeContext({ cwd: '/tmp' })
  assert.equal(ctx.cwd, '/tmp')
  assert.equal((await sbx.runCode('import os; os.getcwd()', { context: ctx })).text, '/tmp')
  await sbx.runCode('y = 5', { context: ctx })
  assert.ok((await sbx.listCodeContexts()).some((c) => c.id === ctx.id))
  await sbx.restartCodeContext(ctx)
  const after = await sbx.runCode('y', { context: ctx })
  assert.equal(after.error.name, 'NameError')
  await sbx.removeCodeContext(ctx)
  assert.ok(!(await sbx.listCodeContexts()).some((c) => c.id === ctx.id))
})

test('files: text, binary, a 20 MB file, list', async () => {
  const dir = unique('files')
  await sbx.files.write(`${dir}/a.txt`, 'hello js')
  assert.equal(await sbx.files.read(`${dir}/a.txt`), 'hello js')
  const bytes = new Uint8Array(256).map((_, i) => i)
  await sbx.files.write(`${dir}/b.bin`, bytes.buffer)
  assert.deepEqual(new Uint8Array(await sbx.files.read(`${dir}/b.bin`, { format: 'bytes' })), bytes)
  const big = new Uint8Array(20 * 1024 * 1024).map((_, i) => i % 251)
  await sbx.files.write(`${dir}/big.bin`, big.buffer)
  const back = await sbx.files.read(`${dir}/big.bin`, { format: 'bytes' })
  assert.equal(back.length, big.length)
  assert.deepEqual(new Uint8Array(back).subarray(0, 1000), big.subarray(0, 1000))
  const names = (await sbx.files.list(dir)).map((e) => e.name).sort()
  assert.deepEqual(names, ['a.txt', 'b.bin', 'big.bin'])
})

test('files: watchDir delivers events', async () => {
  const dir = unique('watch')
  await sbx.files.makeDir(dir)
  const events = []
  const handle = await sbx.files.watchDir(dir, (e) => events.push(e), { timeoutMs: 30000 })
  await sbx.files.write(`${dir}/new.txt`, 'x')
  for (let i = 0; i < 50 && !events.some((e) => e.name === 'new.txt'); i++) await sleep(100)
  await handle.stop()
  assert.ok(events.some((e) => e.name === 'new.txt' && e.type === 'create'), JSON.stringify(events))
})

test('commands: exit code, stdout, envs, cwd, user', async () => {
  const r = await sbx.commands.run('echo "$FOO" && pwd && whoami', {
    envs: { FOO: 'bar' }, cwd: '/tmp', user: 'root',
  })
  assert.equal(r.exitCode, 0)
  assert.equal(r.stdout, 'bar\n/tmp\nroot\n')
  await assert.rejects(sbx.commands.run('exit 3'), (e) => e.exitCode === 3)
})

test('commands: background with sendStdin and kill', async () => {
  const out = []
  const handle = await sbx.commands.run('cat', {
    background: true, stdin: true, onStdout: (d) => out.push(d),
  })
  await sbx.commands.sendStdin(handle.pid, 'ping\n')
  for (let i = 0; i < 50 && !out.join('').includes('ping'); i++) await sleep(100)
  assert.equal(out.join(''), 'ping\n')
  assert.equal(await handle.kill(), true)
  assert.ok(!(await sbx.commands.list()).some((p) => p.pid === handle.pid))
})

test('pty: create, send input, resize, kill', async () => {
  const chunks = []
  const decoder = new TextDecoder()
  const terminal = await sbx.pty.create({
    cols: 80, rows: 24, onData: (d) => chunks.push(decoder.decode(d)), timeoutMs: 30000,
  })
  await sbx.pty.sendInput(terminal.pid, new TextEncoder().encode('echo $((6*7))\n'))
  for (let i = 0; i < 50 && !chunks.join('').includes('42'); i++) await sleep(100)
  assert.ok(chunks.join('').includes('42'))
  await sbx.pty.resize(terminal.pid, { cols: 100, rows: 30 })
  chunks.length = 0
  await sbx.pty.sendInput(terminal.pid, new TextEncoder().encode('stty size\n'))
  for (let i = 0; i < 50 && !chunks.join('').includes('30 100'); i++) await sleep(100)
  assert.ok(chunks.join('').includes('30 100'))
  assert.equal(await sbx.pty.kill(terminal.pid), true)
})
