'use strict';
// Runs the ci-janitor binary for one phase of the Action. No npm dependencies on purpose:
// the Action must work without `npm install`, and every line here runs on every job.
//
// 1. Pick the binary: $CI_JANITOR_BIN if set (a preinstalled copy; tests), else the
//    prebuilt dist/ci-janitor-<target> for this platform, verified against
//    dist/SHA256SUMS, else build it from this action's source with cargo (and say so).
// 2. Spawn it directly, never through /bin/sh: dash drops environment variables whose
//    names contain '-', and the runner passes inputs as INPUT_FAIL-ON-LEAK and the like.
// 3. Forward SIGINT/SIGTERM (a cancelled job), exit with its exit code.
// On a platform ci-janitor does not support: a warning, exit 0, never a broken job.
const { spawn, spawnSync } = require('child_process');
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');

const TARGETS = {
  'linux-x64': 'ci-janitor-x86_64-unknown-linux-musl',
  'linux-arm64': 'ci-janitor-aarch64-unknown-linux-musl',
};

function command(kind, message) {
  const data = String(message).replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
  process.stdout.write(`::${kind} title=ci-janitor::${data}\n`);
}

function expectedSum(name) {
  const file = path.join(__dirname, 'SHA256SUMS');
  if (!fs.existsSync(file)) return null;
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const m = line.trim().match(/^([0-9a-f]{64})\s+\*?(\S+)$/);
    if (m && m[2] === name) return m[1];
  }
  return null;
}

function build() {
  const root = path.join(__dirname, '..');
  const cache = process.env.RUNNER_TOOL_CACHE || process.env.RUNNER_TEMP || os.tmpdir();
  const targetDir = path.join(cache, 'ci-janitor-build');
  command('notice', `no prebuilt binary for ${process.platform}/${process.arch} in dist/; ` +
    `building ci-janitor from this action's source with cargo (cached in ${targetDir})`);
  const r = spawnSync('cargo', ['build', '--release', '--locked', '--bin', 'ci-janitor',
    '--manifest-path', path.join(root, 'Cargo.toml')],
  { stdio: ['ignore', 2, 2], env: { ...process.env, CARGO_TARGET_DIR: targetDir } });
  if (r.error || r.status !== 0) {
    const why = r.error ? r.error.message : `cargo exited with ${r.status}`;
    return { unsupported: `${process.platform}/${process.arch} without a prebuilt binary (${why})` };
  }
  return { bin: path.join(targetDir, 'release', 'ci-janitor') };
}

function locate() {
  if (process.env.CI_JANITOR_BIN) return { bin: process.env.CI_JANITOR_BIN };
  const name = TARGETS[`${process.platform}-${process.arch}`];
  if (!name) return { unsupported: `${process.platform}/${process.arch}` };
  const bin = path.join(__dirname, name);
  if (!fs.existsSync(bin)) return build();
  const want = expectedSum(name);
  if (!want) throw new Error(`dist/${name} is not listed in dist/SHA256SUMS; refusing to run an unverified binary`);
  const got = crypto.createHash('sha256').update(fs.readFileSync(bin)).digest('hex');
  if (got !== want) throw new Error(`checksum mismatch for dist/${name} (expected ${want}, got ${got}); refusing to run it`);
  return { bin };
}

function run(args) {
  let found;
  try {
    found = locate();
  } catch (e) {
    command('error', e.message);
    process.exit(1);
  }
  if (found.unsupported) {
    command('warning', `ci-janitor does not run on ${found.unsupported}; this step does nothing`);
    process.exit(0);
  }
  const child = spawn(found.bin, args, { stdio: 'inherit' });
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig));
  child.on('error', (e) => {
    command('error', `cannot start ${found.bin}: ${e.message}`);
    process.exit(1);
  });
  child.on('exit', (code, signal) => {
    process.exit(code !== null ? code : 128 + (os.constants.signals[signal] || 0));
  });
}

module.exports = { run, locate };
if (require.main === module) run(process.argv.slice(2));
