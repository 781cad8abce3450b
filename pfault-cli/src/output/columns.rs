//! A line of text columns built into a reused buffer without `format!`: `trace`'s per-event
//! path, where the standard formatter's padding and float machinery cost more than the rest
//! of the event.

/// Columns, each followed by one space; [`Columns::end`] ends the line.
pub(crate) struct Columns<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> Columns<'a> {
    pub(crate) fn new(buf: &'a mut Vec<u8>) -> Columns<'a> {
        buf.clear();
        Columns { buf }
    }

    fn spaces(&mut self, n: usize) {
        self.buf.resize(self.buf.len() + n, b' ');
    }

    /// `s` left-aligned in `width` (as `{:<width}`), escaped: text columns carry names.
    pub(crate) fn left(&mut self, s: &str, width: usize) -> &mut Self {
        let s = super::escape(s);
        self.buf.extend_from_slice(s.as_bytes());
        self.spaces(width.saturating_sub(s.chars().count()) + 1);
        self
    }

    /// `s` right-aligned in `width` (as `{:>width}`).
    pub(crate) fn right(&mut self, s: &str, width: usize) -> &mut Self {
        self.spaces(width.saturating_sub(s.len()));
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(b' ');
        self
    }

    pub(crate) fn uint(&mut self, v: u64, width: usize) -> &mut Self {
        self.right(itoa::Buffer::new().format(v), width)
    }

    /// `0x`-prefixed lower-case hex, right-aligned in `width` (as `{:>#width$x}`).
    pub(crate) fn hex(&mut self, v: u64, width: usize) -> &mut Self {
        let mut digits = [0u8; 18];
        let mut i = digits.len();
        let mut x = v;
        loop {
            i -= 1;
            digits[i] = b"0123456789abcdef"[(x & 15) as usize];
            x >>= 4;
            if x == 0 {
                break;
            }
        }
        i -= 2;
        digits[i..i + 2].copy_from_slice(b"0x");
        // Hex digits and "0x" are ASCII.
        self.right(std::str::from_utf8(&digits[i..]).unwrap_or("0x?"), width)
    }

    /// `v / 10^decimals` with `decimals` digits after the point (`v` already rounded to that
    /// unit), aligned in `width` (as `{:<width$.decimals$}` or `{:>...}`).
    pub(crate) fn fixed(&mut self, v: u64, decimals: u32, width: usize, left: bool) -> &mut Self {
        let unit = 10u64.pow(decimals);
        let mut text = [0u8; 48];
        let mut whole = itoa::Buffer::new();
        let whole = whole.format(v / unit).as_bytes();
        let mut len = whole.len();
        text[..len].copy_from_slice(whole);
        if decimals > 0 {
            let mut frac = itoa::Buffer::new();
            let frac = frac.format(v % unit).as_bytes();
            text[len] = b'.';
            len += 1;
            let zeros = decimals as usize - frac.len();
            text[len..len + zeros].fill(b'0');
            len += zeros;
            text[len..len + frac.len()].copy_from_slice(frac);
            len += frac.len();
        }
        // Digits and a point are ASCII.
        let s = std::str::from_utf8(&text[..len]).unwrap_or("?");
        if left {
            self.left(s, width)
        } else {
            self.right(s, width)
        }
    }

    /// The rest of the line, unpadded and escaped, and its end.
    pub(crate) fn end(&mut self, last: &str) {
        self.buf.extend_from_slice(super::escape(last).as_bytes());
        self.buf.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(f: impl FnOnce(&mut Columns)) -> String {
        let mut buf = Vec::new();
        let mut c = Columns::new(&mut buf);
        f(&mut c);
        c.end("end");
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn columns_print_as_format_would() {
        let got = line(|c| {
            c.fixed(1_234_568, 6, 12, true)
                .uint(42, 7)
                .left("comm", 16)
                .hex(0x7f00_dead_beef, 18)
                .fixed(0, 1, 9, false)
                .fixed(12_345, 1, 9, false);
        });
        let want = format!(
            "{:<12.6} {:>7} {:<16} {:>#18x} {:>9.1} {:>9.1} end\n",
            1.234568, 42, "comm", 0x7f00_dead_beef_u64, 0.0, 1234.5
        );
        assert_eq!(got, want);
        assert_eq!(
            line(|c| {
                c.hex(0, 4).fixed(5, 3, 0, true);
            }),
            " 0x0 0.005 end\n"
        );
    }
}
