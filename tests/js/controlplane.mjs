// The official npm SDKs against the real control plane (not debug mode): the
// whole Sandbox lifecycle through E2B_API_URL / E2B_SANDBOX_URL / E2B_API_KEY.
// Run through pytest (tests/controlplane/test_js_controlplane.py), which
// starts the control plane and exports those variables.
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Sandbox } from '@e2b/code-interpreter'
import { Sandbox as BaseSandbox } from 'e2b'

for (const name of ['E2B_API_URL', 'E2B_SANDBOX_URL', 'E2B_API_KEY']) {
  if (!process.env[name]) throw new Error(`set ${name}: run this through pytest`)
}

test('create, run code, files, commands, list, timeout, kill', async () => {
  const sbx = await Sandbox.create({ envs: { GREETING: 'hi' }, metadata: { suite: 'js-cp' }, timeoutMs: 120_000 })
  try {
    assert.equal((await sbx.runCode('6 * 7')).text, '42')
    assert.equal((await sbx.commands.run('echo $GREETING')).stdout, 'hi\n')
    await sbx.files.write('/home/user/js.txt', 'from node')
    assert.equal(await sbx.files.read('/home/user/js.txt'), 'from node')
    const info = await sbx.getInfo()
    assert.equal(info.sandboxId, sbx.sandboxId)
    assert.deepEqual(info.metadata, { suite: 'js-cp' })
    const listed = await BaseSandbox.list({ query: { metadata: { suite: 'js-cp' } } }).nextItems()
    assert.deepEqual(listed.map((s) => s.sandboxId), [sbx.sandboxId])
    await sbx.setTimeout(60_000)
    assert.equal(await sbx.isRunning(), true)
  } finally {
    await sbx.kill()
  }
  assert.equal(await sbx.isRunning(), false)
  assert.equal(await BaseSandbox.kill(sbx.sandboxId), false)
})

test('pause and connect keep the kernel state', async () => {
  const sbx = await Sandbox.create({ timeoutMs: 120_000 })
  try {
    await sbx.runCode('kept = 41')
    await sbx.pause()
    assert.equal(await sbx.isRunning(), false)
    const resumed = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 60_000 })
    assert.equal((await resumed.runCode('kept + 1')).text, '42')
  } finally {
    await BaseSandbox.kill(sbx.sandboxId)
  }
})
