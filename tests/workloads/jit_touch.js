// Touches every page of fresh buffers from a JavaScript function V8 compiles: the faults of
// `pfaultJsTouchPages`, named from the perf map node writes with --perf-basic-prof.
// usage: node --perf-basic-prof [--interpreted-frames-native-stack] jit_touch.js [ROUNDS]
// The buffers are kept, so no page is reused and every touch faults.
const rounds = Number(process.argv[2] || 32);
const mib = 8;
const kept = [];
function pfaultJsTouchPages() {
  const b = new Uint8Array(mib << 20);
  for (let i = 0; i < b.length; i += 4096) b[i] = 1;
  kept.push(b);
}
for (let r = 0; r < rounds; r++) pfaultJsTouchPages();
console.log(`pid=${process.pid} touches=${(rounds * (mib << 20)) / 4096}`);
