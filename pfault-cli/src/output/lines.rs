//! Output that leaves pfault in whole lines. Lines gather in a buffer and go out in writes
//! that end where a line ends; where another process may write to the same place (stdout, a
//! traced command's too), each write is at most `PIPE_BUF` bytes, which a pipe never splits,
//! so no line of pfault's is cut by theirs.

use std::io::{self, Write};

/// The most a pipe writes in one piece (POSIX: at least 512; Linux: 4096).
const PIPE_BUF: usize = 4096;

pub(crate) struct Lines {
    out: Box<dyn Write>,
    buf: Vec<u8>,
    /// Writes are at most this long, unless one line is longer.
    chunk: usize,
}

impl Lines {
    /// `shared`: another process may write to `out` too.
    pub(crate) fn new(out: Box<dyn Write>, shared: bool) -> Lines {
        let chunk = if shared { PIPE_BUF } else { 1 << 16 };
        Lines {
            out,
            buf: Vec::with_capacity(2 * chunk),
            chunk,
        }
    }

    /// Writes out whole lines while at least a chunk's worth waits.
    fn drain(&mut self) -> io::Result<()> {
        let mut start = 0;
        while self.buf.len() - start >= self.chunk {
            let window = &self.buf[start..start + self.chunk];
            let end = match window.iter().rposition(|&b| b == b'\n') {
                Some(i) => start + i + 1,
                // One line longer than a chunk: it goes out alone, whole.
                None => match self.buf[start..].iter().position(|&b| b == b'\n') {
                    Some(i) => start + i + 1,
                    None => break,
                },
            };
            self.out.write_all(&self.buf[start..end])?;
            start = end;
        }
        self.buf.drain(..start);
        Ok(())
    }
}

impl Write for Lines {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= self.chunk {
            self.drain()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.drain()?;
        // What is left is shorter than a chunk: whole lines, and at the very end perhaps a
        // last line without its newline.
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        self.out.flush()
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use std::{cell::RefCell, rc::Rc};

    use super::*;

    /// Records each write it is given.
    #[derive(Clone, Default)]
    struct Writes(Rc<RefCell<Vec<Vec<u8>>>>);

    impl Write for Writes {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.borrow_mut().push(data.to_vec());
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_write_is_whole_lines_of_at_most_pipe_buf() {
        let writes = Writes::default();
        let mut lines = Lines::new(Box::new(writes.clone()), true);
        let mut expected = Vec::new();
        for i in 0..5000 {
            let line = format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(i % 97));
            // Written in pieces, as serde and write! do.
            let (a, b) = line.as_bytes().split_at(line.len() / 2);
            lines.write_all(a).unwrap();
            lines.write_all(b).unwrap();
            expected.extend_from_slice(line.as_bytes());
        }
        lines.flush().unwrap();
        let got = writes.0.borrow();
        assert!(got.len() > 10);
        for w in got.iter() {
            assert!(w.len() <= PIPE_BUF, "a write of {} bytes", w.len());
            assert_eq!(w.last(), Some(&b'\n'), "a write ends inside a line");
        }
        assert_eq!(got.concat(), expected);
    }

    #[test]
    fn a_line_longer_than_a_chunk_goes_out_whole() {
        let writes = Writes::default();
        let mut lines = Lines::new(Box::new(writes.clone()), true);
        let long = format!("{}\n", "y".repeat(3 * PIPE_BUF));
        lines.write_all(b"short\n").unwrap();
        lines.write_all(long.as_bytes()).unwrap();
        lines.write_all(b"tail").unwrap();
        lines.flush().unwrap();
        let got = writes.0.borrow();
        assert_eq!(got.concat(), format!("short\n{long}tail").into_bytes());
        assert!(got
            .iter()
            .any(|w| w == long.as_bytes() || w.ends_with(long.as_bytes())));
    }
}
