//! Touches fresh memory from Rust built as cargo builds it, without frame pointers:
//! main -> run -> pager::Toucher::touch_every_page, one minor fault per page.
//! usage: rust_nofp PAGES [wait]
use std::{
    hint::black_box,
    io::{BufRead, Write},
    time::Instant,
};

mod pager {
    pub struct Toucher<T> {
        pub buf: Vec<T>,
    }

    impl<T: Copy> Toucher<T> {
        #[inline(never)]
        pub fn touch_every_page(&mut self, v: T) -> usize {
            let step = 4096 / std::mem::size_of::<T>();
            let p = self.buf.as_mut_ptr();
            let (mut i, mut n) = (0, 0);
            while i < self.buf.capacity() {
                // SAFETY: within the vector's capacity; the values are never read.
                unsafe { p.add(i).write_volatile(v) };
                i += step;
                n += 1;
            }
            n
        }
    }
}

#[inline(never)]
fn run(pages: usize) -> usize {
    let mut t = pager::Toucher {
        buf: Vec::<u64>::with_capacity(pages * 512),
    };
    let n = t.touch_every_page(black_box(7u64));
    // The vector is dropped after the call: not a tail call.
    black_box(&t);
    n
}

/// This thread's minor faults so far, as getrusage(RUSAGE_THREAD) counts them.
fn minflt() -> u64 {
    let s = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(7).unwrap().parse().unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let pages = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1024);
    if args.get(2).map(String::as_str) == Some("wait") {
        println!("ready pid={}", std::process::id());
        std::io::stdout().flush().unwrap();
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).unwrap();
    }
    let before = minflt();
    let t0 = Instant::now();
    let n = run(pages);
    let secs = t0.elapsed().as_secs_f64();
    let after = minflt();
    println!(
        "pid={} minflt={} majflt=0 seconds={secs:.6} touched={n}",
        std::process::id(),
        after - before
    );
}
