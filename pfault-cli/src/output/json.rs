//! JSON Lines: one object per line, flushed by the caller's writer.

use std::io::Write;

use anyhow::Result;
use serde::Serialize;

pub(crate) fn write_line<T: Serialize>(w: &mut dyn Write, value: &T) -> Result<()> {
    // A failed write stays an io::Error (serde_json's own hides it from the error chain), so
    // `pfault ... -o json | head` ends quietly.
    serde_json::to_writer(&mut *w, value).map_err(|e| {
        if e.is_io() {
            anyhow::Error::from(std::io::Error::from(e))
        } else {
            e.into()
        }
    })?;
    w.write_all(b"\n")?;
    Ok(())
}

/// A JSON object built field by field into a reused buffer, for the per-event path where
/// serde's generic writer costs more than the rest of the event (`trace -o json`).
pub(crate) struct Object<'a> {
    buf: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Object<'a> {
    pub(crate) fn new(buf: &'a mut Vec<u8>) -> Object<'a> {
        buf.push(b'{');
        Object { buf, first: true }
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        self.buf.push(b'"');
        self.buf.extend_from_slice(k.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    pub(crate) fn u64(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k);
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
        self
    }

    pub(crate) fn opt_u64(&mut self, k: &str, v: Option<u64>) -> &mut Self {
        match v {
            Some(v) => self.u64(k, v),
            None => {
                self.key(k);
                self.buf.extend_from_slice(b"null");
                self
            }
        }
    }

    pub(crate) fn bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.key(k);
        self.buf.extend_from_slice(if v { b"true" } else { b"false" });
        self
    }

    pub(crate) fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        push_str(self.buf, v);
        self
    }

    pub(crate) fn strs(&mut self, k: &str, v: &[&str]) -> &mut Self {
        self.key(k);
        self.buf.push(b'[');
        for (i, s) in v.iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            push_str(self.buf, s);
        }
        self.buf.push(b']');
        self
    }

    /// A field whose value serde writes (a stack's frames).
    pub(crate) fn value<T: Serialize + ?Sized>(&mut self, k: &str, v: &T) -> Result<&mut Self> {
        self.key(k);
        serde_json::to_writer(&mut *self.buf, v)?;
        Ok(self)
    }

    /// Closes the object and ends its line.
    pub(crate) fn end(&mut self) {
        self.buf.extend_from_slice(b"}\n");
    }
}

/// `s` as a JSON string: quotes, backslashes and control characters escaped.
pub(crate) fn push_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                buf.extend_from_slice(b"\\u00");
                buf.push(HEX[(b >> 4) as usize]);
                buf.push(HEX[(b & 15) as usize]);
            }
            _ => buf.push(b),
        }
    }
    buf.push(b'"');
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Serialize;

    use super::*;

    #[test]
    fn a_hand_built_object_reads_back_as_serde_writes_it() {
        let tricky: String = (0u8..0x80).map(char::from).chain("é✓".chars()).collect();
        let mut buf = Vec::new();
        Object::new(&mut buf)
            .u64("n", u64::MAX)
            .str("s", &tricky)
            .bool("b", false)
            .opt_u64("none", None)
            .strs("list", &["a\"b", ""])
            .end();
        assert_eq!(buf.last(), Some(&b'\n'));
        assert_eq!(
            buf.iter().filter(|&&b| b == b'\n').count(),
            1,
            "a raw newline inside the line"
        );
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"n": u64::MAX, "s": tricky, "b": false, "none": null, "list": ["a\"b", ""]})
        );
    }

    #[derive(Serialize)]
    struct Row<'a> {
        pid: u32,
        comm: &'a str,
        latency_ns: Option<u64>,
    }

    #[test]
    fn one_object_per_line_even_when_a_string_holds_a_newline() {
        let mut out = Vec::new();
        let row = Row {
            pid: 7,
            comm: "a\nb\"c",
            latency_ns: None,
        };
        write_line(&mut out, &row).unwrap();
        write_line(
            &mut out,
            &Row {
                latency_ns: Some(12),
                ..row
            },
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "{\"pid\":7,\"comm\":\"a\\nb\\\"c\",\"latency_ns\":null}\n\
             {\"pid\":7,\"comm\":\"a\\nb\\\"c\",\"latency_ns\":12}\n"
        );
        let back: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0]["comm"], "a\nb\"c");
    }

    #[test]
    fn a_value_json_cannot_hold_is_an_error() {
        // JSON object keys must be strings.
        let mut m = BTreeMap::new();
        m.insert((1u8, 2u8), 3u8);
        let mut out = Vec::new();
        assert!(write_line(&mut out, &m).is_err());
    }

    #[test]
    fn a_writer_that_fails_is_an_error() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let err = write_line(&mut Full, &1u32).unwrap_err();
        // main() looks for the io::Error in the chain to end quietly on a closed pipe.
        assert!(
            err.chain().any(|c| c
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)),
            "{err:?}"
        );
    }
}
