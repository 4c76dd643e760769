// Runs the http-tests/cache-tests suite (a copy of ../shared/cache-tests,
// with its npm dependencies installed) against the proxy, and prints one
// JSON object: our results per test and the summary, beside the suite's
// published results for other caches.
//
//   node run.mjs SUITE_DIR PROXY_BIN CONFIG ORIGIN_URL MODE
//
// MODE "concurrent": one proxy, the whole suite as the CLI runs it (25
// tests at a time). MODE "isolated": a fresh proxy for every test, so no
// test sees another's entries.

import { spawn } from 'node:child_process'
import net from 'node:net'
import path from 'node:path'
import { pathToFileURL } from 'node:url'

const [suiteDir, proxyBin, config, originUrl, mode] = process.argv.slice(2)
const suite = (p) => import(pathToFileURL(path.join(suiteDir, p)).href)
const { default: tests } = await suite('tests/index.mjs')
const runner = await suite('test-engine/client/runner.mjs')
const { determineTestResult } = await suite('test-engine/lib/results.mjs')

function freePort () {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
    server.on('error', reject)
  })
}

async function startProxy () {
  const [port, admin] = [await freePort(), await freePort()]
  const child = spawn(proxyBin, [
    '--config', config,
    '--listen', `127.0.0.1:${port}`,
    '--admin-listen', `127.0.0.1:${admin}`,
    '--upstream', originUrl
  ], { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, LOG: 'error' } })
  const deadline = Date.now() + 10000
  for (;;) {
    try {
      const health = await fetch(`http://127.0.0.1:${admin}/healthz`)
      if (health.ok) break
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`proxy did not start: ${err}`)
    }
    await new Promise(resolve => setTimeout(resolve, 20))
  }
  return { base: `http://127.0.0.1:${port}`, stop: () => new Promise(resolve => { child.on('exit', resolve); child.kill('SIGKILL') }) }
}

if (mode === 'concurrent') {
  const proxy = await startProxy()
  try {
    await runner.runTests(tests, false, proxy.base)
  } finally {
    await proxy.stop()
  }
} else if (mode === 'isolated') {
  for (const testSet of tests) {
    for (const test of testSet.tests) {
      if (test.browser_only === true) continue
      const proxy = await startProxy()
      try {
        await runner.runTests([{ ...testSet, tests: [test] }], false, proxy.base)
      } finally {
        await proxy.stop()
      }
    }
  }
} else {
  throw new Error(`mode is concurrent or isolated, not ${mode}`)
}

const ours = runner.getResults()

/** Required tests passed (a test's own result, dependencies not held against it). */
function summary (results) {
  let required = 0
  let passed = 0
  const failed = []
  for (const testSet of tests) {
    for (const test of testSet.tests) {
      if (test.browser_only === true) continue
      if (test.kind !== undefined && test.kind !== 'required') continue
      required += 1
      const result = determineTestResult(tests, test.id, results, false)
      if (result[2] === '✅') passed += 1
      else failed.push(test.id)
    }
  }
  return { required, passed, failed }
}

const published = {}
for (const name of ['nginx', 'haproxy', 'varnish', 'squid', 'caddy', 'trafficserver', 'apache']) {
  const { default: results } = await import(pathToFileURL(path.join(suiteDir, 'results', `${name}.json`)).href, { with: { type: 'json' } })
  const { required, passed } = summary(results)
  published[name] = { required, passed }
}
console.log(JSON.stringify({ mode, ours: summary(ours), published, results: ours }, null, 2))
