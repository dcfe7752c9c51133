#!/usr/bin/env node
// Deterministic offline compile of the pool's L1 contracts with the pinned solc-js (package.json).
//
//   node contracts/compile.js          write contracts/artifacts/<Name>.json
//   node contracts/compile.js --check  recompile in memory; exit 1 if the committed artifacts
//                                      differ from what the sources compile to (or are missing/stray)
//
// Every contracts/*.sol is compiled in one standard-JSON run with fixed settings (below). Each
// deployable contract (non-empty creation bytecode; interfaces are skipped) gets one artifact:
//   { contractName, sourceName, compiler: { version, settings }, abi, bytecode, deployedBytecode,
//     methodIdentifiers, errorSelectors, eventTopics, devdoc, userdoc }
// `abi`, `bytecode` and `deployedBytecode` (0x-hex strings) are the shape alloy's `sol!` reads from a
// JSON artifact. Note `deployedBytecode` has zeros where immutables go, so it is not byte-equal to
// the code of a deployed instance. Compiler warnings are treated as errors.
'use strict';

const fs = require('fs');
const path = require('path');
const solc = require('solc');

const ROOT = path.resolve(__dirname, '..');
const SRC_DIR = __dirname;
const OUT_DIR = path.join(__dirname, 'artifacts');

// Fixed compiler settings: changing any of them changes every artifact (and `--check` catches it).
const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  // Cancun: runs on every Ethereum L1 (and devnet/anvil) since March 2024; nothing newer is needed.
  evmVersion: 'cancun',
  viaIR: false,
  metadata: { bytecodeHash: 'ipfs' },
};

function fail(msg) {
  process.stderr.write(msg.endsWith('\n') ? msg : msg + '\n');
  process.exit(1);
}

function keccakHex(text) {
  // solc-js ships js-sha3 as a dependency; use it for selectors and topics.
  const { keccak256 } = require('js-sha3');
  return '0x' + keccak256(text);
}

function signature(item) {
  const type = (p) => {
    if (!p.type.startsWith('tuple')) return p.type;
    return '(' + p.components.map(type).join(',') + ')' + p.type.slice('tuple'.length);
  };
  return item.name + '(' + item.inputs.map(type).join(',') + ')';
}

function compile() {
  const files = fs
    .readdirSync(SRC_DIR)
    .filter((f) => f.endsWith('.sol'))
    .sort();
  if (files.length === 0) fail('no .sol files in ' + SRC_DIR);

  const sources = {};
  for (const f of files) {
    const sourceName = path.relative(ROOT, path.join(SRC_DIR, f)).split(path.sep).join('/');
    sources[sourceName] = { content: fs.readFileSync(path.join(SRC_DIR, f), 'utf8') };
  }

  const input = {
    language: 'Solidity',
    sources,
    settings: {
      ...SETTINGS,
      outputSelection: {
        '*': {
          '*': [
            'abi',
            'evm.bytecode.object',
            'evm.deployedBytecode.object',
            'evm.methodIdentifiers',
            'devdoc',
            'userdoc',
          ],
        },
      },
    },
  };

  const output = JSON.parse(
    solc.compile(JSON.stringify(input), {
      import: (p) => ({ error: 'imports outside contracts/*.sol are not allowed: ' + p }),
    }),
  );

  const diagnostics = output.errors || [];
  if (diagnostics.length > 0) {
    fail(
      'solc ' + solc.version() + ' reported ' + diagnostics.length + ' error(s)/warning(s):\n' +
        diagnostics.map((e) => e.formattedMessage || e.message).join('\n'),
    );
  }

  const artifacts = {};
  for (const sourceName of Object.keys(output.contracts).sort()) {
    for (const name of Object.keys(output.contracts[sourceName]).sort()) {
      const c = output.contracts[sourceName][name];
      if (!c.evm.bytecode.object) continue; // interface or abstract contract
      if (artifacts[name]) fail('two contracts named ' + name);
      const errorSelectors = {};
      const eventTopics = {};
      for (const item of c.abi) {
        if (item.type === 'error') errorSelectors[signature(item)] = keccakHex(signature(item)).slice(0, 10);
        if (item.type === 'event') eventTopics[signature(item)] = keccakHex(signature(item));
      }
      const artifact = {
        contractName: name,
        sourceName,
        compiler: { version: solc.version(), settings: SETTINGS },
        abi: c.abi,
        bytecode: '0x' + c.evm.bytecode.object,
        deployedBytecode: '0x' + c.evm.deployedBytecode.object,
        methodIdentifiers: c.evm.methodIdentifiers,
        errorSelectors,
        eventTopics,
        devdoc: c.devdoc,
        userdoc: c.userdoc,
      };
      artifacts[name] = JSON.stringify(artifact, null, 2) + '\n';
    }
  }
  return artifacts;
}

function main() {
  const args = process.argv.slice(2);
  const check = args.includes('--check');
  if (args.some((a) => a !== '--check')) fail('usage: node contracts/compile.js [--check]');

  const artifacts = compile();
  const names = Object.keys(artifacts).sort();
  const existing = fs.existsSync(OUT_DIR)
    ? fs.readdirSync(OUT_DIR).filter((f) => f.endsWith('.json')).sort()
    : [];

  if (check) {
    const problems = [];
    for (const name of names) {
      const file = path.join(OUT_DIR, name + '.json');
      if (!fs.existsSync(file)) problems.push('missing: contracts/artifacts/' + name + '.json');
      else if (fs.readFileSync(file, 'utf8') !== artifacts[name]) {
        problems.push('stale: contracts/artifacts/' + name + '.json');
      }
    }
    for (const f of existing) {
      if (!artifacts[f.slice(0, -'.json'.length)]) problems.push('stray: contracts/artifacts/' + f);
    }
    if (problems.length > 0) {
      fail(
        problems.join('\n') +
          '\nartifacts do not match the sources (solc ' + solc.version() + '); run: node contracts/compile.js',
      );
    }
    console.log('artifacts up to date (' + names.join(', ') + '; solc ' + solc.version() + ')');
    return;
  }

  fs.mkdirSync(OUT_DIR, { recursive: true });
  for (const f of existing) {
    if (!artifacts[f.slice(0, -'.json'.length)]) fs.unlinkSync(path.join(OUT_DIR, f));
  }
  for (const name of names) {
    fs.writeFileSync(path.join(OUT_DIR, name + '.json'), artifacts[name]);
    console.log('wrote contracts/artifacts/' + name + '.json');
  }
}

main();
