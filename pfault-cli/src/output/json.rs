//! JSON Lines: one object per line, flushed by the caller's writer.

use std::io::Write;

use anyhow::Result;
use serde::Serialize;

pub fn write_line<T: Serialize>(w: &mut dyn Write, value: &T) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Serialize;

    use super::*;

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
