'use strict';
// Runs the ci-janitor binary for one phase of the Action. No npm dependencies on purpose:
// the Action must work without `npm install`, and every line here runs on every job.
//
// 1. Find a verified binary with ci-janitor.sh --locate (POSIX sh, shared with the
//    composite sub-actions, which run without node): $CI_JANITOR_BIN, the tool cache, or
//    this tree's release asset downloaded and checked against dist/SHA256SUMS. When none
//    can be had it fails the step (or warns, with on-missing-binary: warn).
// 2. Spawn the binary directly, never through /bin/sh: dash drops environment variables
//    whose names contain '-', and the runner passes inputs as INPUT_FAIL-ON-LEAK.
// 3. Forward SIGINT/SIGTERM (a cancelled job), exit with its exit code.
const { spawn, spawnSync } = require('child_process');
const os = require('os');
const path = require('path');

const PREFIX = 'ci-janitor-bin=';

function locate() {
  const r = spawnSync('sh', [path.join(__dirname, 'ci-janitor.sh'), '--locate',
    '--platform', `${process.platform}/${process.arch}`], {
    stdio: ['ignore', 'pipe', 'inherit'],
    // The script reads the input with underscores: dash would drop the hyphenated name.
    env: { ...process.env, INPUT_ON_MISSING_BINARY: process.env['INPUT_ON-MISSING-BINARY'] || '' },
  });
  if (r.error) {
    process.stdout.write(`::error title=ci-janitor::cannot run sh to find the ci-janitor binary: ${r.error.message}\n`);
    return { code: 1 };
  }
  let bin = null;
  for (const line of String(r.stdout).split('\n')) {
    if (line.startsWith(PREFIX)) bin = line.slice(PREFIX.length);
    else if (line) process.stdout.write(`${line}\n`);
  }
  return bin ? { bin } : { code: r.status === null ? 1 : r.status };
}

function run(args) {
  const found = locate();
  if (!found.bin) process.exit(found.code);
  // The handlers first: a signal that comes while the child starts is still passed on
  // (a handler runs only after this function returns, when `child` is set).
  let child = null;
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child && child.kill(sig));
  child = spawn(found.bin, args, { stdio: 'inherit' });
  child.on('error', (e) => {
    process.stdout.write(`::error title=ci-janitor::cannot start ${found.bin}: ${e.message}\n`);
    process.exit(1);
  });
  child.on('exit', (code, signal) => {
    process.exit(code !== null ? code : 128 + (os.constants.signals[signal] || 0));
  });
}

module.exports = { run, locate };
if (require.main === module) run(process.argv.slice(2));
