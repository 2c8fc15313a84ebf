// bench/data/tiktoken_bench.js: tiktoken's "gpt2" encoding (npm tiktoken: OpenAI's Rust code
// built to WASM) on the same text, one thread, best of REPEAT; checks its ids against atom's.
// Usage: node tiktoken_bench.js MODULE_DIR CORPUS ATOM_TRAIN_BIN REPEAT
const [moduleDir, corpus, atomBin, repeat] = process.argv.slice(2);
const { get_encoding } = require(require.resolve('tiktoken', { paths: [moduleDir] }));
const fs = require('fs');
const bytes = fs.readFileSync(corpus);
const text = bytes.toString('utf8');
const enc = get_encoding('gpt2');
enc.encode_ordinary(text.slice(0, 100000)); // warm up the WASM code
let best = Infinity, bestCpu = Infinity, ids = null;
for (let r = 0; r < Number(repeat); r++) {
  const t0 = process.hrtime.bigint(), c0 = process.cpuUsage();
  ids = enc.encode_ordinary(text);
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const c = process.cpuUsage(c0);
  best = Math.min(best, secs);
  bestCpu = Math.min(bestCpu, (c.user + c.system) / 1e6);
}
const atom = fs.readFileSync(atomBin);
let same = ids.length === atom.length / 2 - 1; // atom's file ends with <|endoftext|>
for (let i = 0; same && i < ids.length; i++)
  same = ids[i] === atom.readUInt16LE(2 * i);
const pkg = JSON.parse(fs.readFileSync(`${moduleDir}/node_modules/tiktoken/package.json`));
console.log(`tiktoken_version ${pkg.version}`);
console.log(`tiktoken_mb_per_s ${(bytes.length / 1e6 / best).toFixed(2)}`);
console.log(`tiktoken_mb_per_cpu_s ${(bytes.length / 1e6 / bestCpu).toFixed(2)}`);
console.log(`tiktoken_tokens ${ids.length}`);
console.log(`tiktoken_same_ids ${same ? 'yes' : 'NO'}`);
enc.free();
