// Touches every page of fresh buffers from a JavaScript function V8 compiles: the faults of
// `pfaultJsTouchPages`, named from the perf map node writes with --perf-basic-prof.
// usage: node --perf-basic-prof [--interpreted-frames-native-stack] jit_touch.js [ROUNDS [warm]]
// The buffers are kept, so no page is reused and every touch faults. With `warm`, one round
// runs a second ahead of the rest, which alone are counted in `touches`: a tracer started
// before may load what it needs to walk the stacks meanwhile.
const rounds = Number(process.argv[2] || 32);
const warm = process.argv[3] === "warm";
const mib = 8;
const kept = [];
function pfaultJsTouchPages() {
  const b = new Uint8Array(mib << 20);
  for (let i = 0; i < b.length; i += 4096) b[i] = 1;
  kept.push(b);
}
function run() {
  for (let r = 0; r < rounds; r++) pfaultJsTouchPages();
  console.log(`pid=${process.pid} touches=${(rounds * (mib << 20)) / 4096}`);
}
if (warm) {
  pfaultJsTouchPages();
  setTimeout(run, 1000);
} else {
  run();
}
