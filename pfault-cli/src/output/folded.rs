//! Folded stacks, as bcc's `stackcount -f` and flamegraph.pl read them:
//! `comm;root;...;leaf COUNT`.

use std::io::Write;

use anyhow::Result;

/// One folded line from frames already ordered root first. A `;` or any whitespace in a
/// frame (a comm may even hold a newline) becomes `_`: it would split the frame or the line;
/// other control characters are escaped, as in text.
pub(crate) fn line(frames: &[String], count: u64) -> String {
    let mut s = frames
        .iter()
        .map(|f| super::escape(&f.replace(|c: char| c == ';' || c.is_whitespace(), "_")).into_owned())
        .collect::<Vec<_>>()
        .join(";");
    s.push(' ');
    s.push_str(&count.to_string());
    s
}

pub(crate) fn write(w: &mut dyn Write, lines: &[String]) -> Result<()> {
    for l in lines {
        writeln!(w, "{l}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(f: &[&str]) -> Vec<String> {
        f.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn frames_are_joined_root_first_with_the_count_last() {
        assert_eq!(
            line(&frames(&["bash", "main", "touch_pages"]), 20000),
            "bash;main;touch_pages 20000"
        );
        assert_eq!(line(&frames(&["only"]), 0), "only 0");
        assert_eq!(line(&frames(&["a"]), u64::MAX), format!("a {}", u64::MAX));
    }

    #[test]
    fn separators_inside_a_frame_are_replaced() {
        // `;` splits frames and the last space splits off the count: neither may survive
        // inside a frame (a comm, a C++ symbol, `name [pid]`).
        assert_eq!(
            line(&frames(&["my prog [42]", "ns::f(int; char)", "x_[k]"]), 3),
            "my_prog_[42];ns::f(int__char);x_[k] 3"
        );
    }

    #[test]
    fn whitespace_inside_a_frame_never_breaks_the_line() {
        // A comm may hold a newline or a tab (prctl(PR_SET_NAME) takes any byte but NUL).
        let l = line(&frames(&["evil\ncomm", "tab\there", "cr\rx", "\x1b[31mred"]), 5);
        assert_eq!(l, "evil_comm;tab_here;cr_x;\\x1b[31mred 5");
        assert_eq!(l.lines().count(), 1);
        let (stack, count) = l.rsplit_once(' ').unwrap();
        assert_eq!(count, "5");
        assert_eq!(stack.split(';').count(), 4);
    }

    #[test]
    fn write_puts_one_line_each() {
        let mut out = Vec::new();
        write(&mut out, &["a;b 1".to_string(), "c 2".to_string()]).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "a;b 1\nc 2\n");
        let mut out = Vec::new();
        write(&mut out, &[]).unwrap();
        assert!(out.is_empty());
    }
}
