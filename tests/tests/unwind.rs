//! CFI unwinding (`--unwind cfi`, the default) on programs a frame-pointer walk gets wrong:
//! callers of memset, C built with -O2 -fomit-frame-pointer, Rust built as cargo builds it;
//! and on code it has no CFI for. Counts are checked against the workloads' own getrusage.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use pfault_tests::*;

/// `stackcount -U --folded` (plus `extra`) over `program PAGES`: its folded lines, the
/// workload's minor faults, and pfault's stderr.
fn stacks_of(name: &str, program: &Path, pages: &str, extra: &[&str]) -> (Vec<(String, u64)>, u64, String) {
    let out = scratch(name).join("folded.txt");
    let mut args = vec!["stackcount", "-U", "--folded"];
    args.extend_from_slice(extra);
    let (truth, stderr) = pfault_on_program(&args, &out, program, &[pages]);
    let folded = std::fs::read_to_string(&out).unwrap();
    (folded_lines(&folded), num(&truth, "minflt"), stderr)
}

/// `stackcount -U -o json` (plus `extra`) over `program WARGS`: its stacks as `root;...;leaf`
/// names, the workload's minor faults, and the run's JSON summary.
fn json_stacks(
    name: &str,
    program: &Path,
    extra: &[&str],
    wargs: &[&str],
) -> (Vec<(String, u64)>, u64, serde_json::Value) {
    let out = scratch(name).join("stacks.json");
    let mut args = vec!["stackcount", "-U", "-o", "json"];
    args.extend_from_slice(extra);
    let (truth, stderr) = pfault_on_program(&args, &out, program, wargs);
    let lines = json_lines(&out)
        .iter()
        .map(|r| {
            let names: Vec<&str> = r["ustack"]
                .as_array()
                .map(|a| a.iter().rev().filter_map(|f| f["symbol"].as_str()).collect())
                .unwrap_or_default();
            (names.join(";"), r["count"].as_u64().unwrap_or(0))
        })
        .collect();
    (lines, num(&truth, "minflt"), summary(&stderr))
}

/// Where the table of `program` came from, as the JSON summary says.
fn cfi_of(summary: &serde_json::Value, program: &Path) -> serde_json::Value {
    summary["unwind"]["tables"]["tables"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["path"].as_str() == program.to_str()))
        .map_or(serde_json::Value::Null, |t| t["cfi"].clone())
}

/// Of the faults on stacks that `is_leaf` picks, how many, and how many of those on stacks
/// that hold `want`.
fn share(lines: &[(String, u64)], is_leaf: impl Fn(&str) -> bool, want: impl Fn(&str) -> bool) -> (u64, u64) {
    let mut total = 0;
    let mut with = 0;
    for (stack, n) in lines.iter().filter(|(s, _)| is_leaf(s)) {
        total += n;
        if want(stack) {
            with += n;
        }
    }
    (total, with)
}

fn leaf(stack: &str) -> &str {
    stack.rsplit(';').next().unwrap_or("")
}

fn at_least_99_percent(with: u64, total: u64, what: &str, lines: &[(String, u64)]) {
    assert!(
        with * 100 >= total * 99,
        "{what}: {with} of {total} faults, on these stacks:\n{lines:#?}"
    );
}

/// The faults on stacks that `is_leaf` picks are the workload's (its getrusage `minflt`,
/// within 1%), and at least 99% of them are on stacks that hold `want` (`what` says which).
/// Returns how many there are.
fn assert_kept(
    lines: &[(String, u64)],
    minflt: u64,
    is_leaf: impl Fn(&str) -> bool,
    want: impl Fn(&str) -> bool,
    what: &str,
) -> u64 {
    let (total, with) = share(lines, is_leaf, want);
    assert!(
        within(total, minflt, 1.0),
        "{what}: {total} faults at its leaf, getrusage says {minflt}: {lines:#?}"
    );
    at_least_99_percent(with, total, what, lines);
    total
}

#[test]
fn the_caller_of_memset_is_kept() {
    if !root_or_skip() {
        return;
    }
    let program = workload("memset_caller");
    let (lines, minflt, _) = stacks_of("unwind-memset", &program, "20000", &[]);
    let in_memset = |s: &str| leaf(s).starts_with("__memset");
    assert_kept(
        &lines,
        minflt,
        in_memset,
        |s| s.contains(";main;fill_pages;__memset"),
        "main;fill_pages;memset",
    );
    // The frame-pointer walk skips fill_pages: what the CFI walk is for.
    let (lines, _, _) = stacks_of("unwind-memset-fp", &program, "20000", &["--unwind", "fp"]);
    let (total, with) = share(&lines, in_memset, |s| s.contains(";fill_pages;"));
    assert!(
        total > 0 && with == 0,
        "frame pointers found fill_pages? {lines:#?}"
    );
}

#[test]
fn c_built_with_o2_and_no_frame_pointers_unwinds_to_start() {
    if !root_or_skip() {
        return;
    }
    let (lines, minflt, _) = stacks_of("unwind-omit-fp", &workload("omit_fp"), "20000", &[]);
    assert_kept(
        &lines,
        minflt,
        |s| leaf(s) == "touch_pages_nofp",
        |s| {
            s.starts_with("omit_fp;_start;")
                && s.contains(";__libc_start_call_main;main;walk_pages;touch_pages_nofp")
        },
        "_start..main;walk_pages;touch_pages_nofp",
    );
}

#[test]
fn rust_without_frame_pointers_unwinds_to_start() {
    if !root_or_skip() {
        return;
    }
    let (lines, minflt, _) = stacks_of("unwind-rust", &rust_workload("rust_nofp"), "20000", &[]);
    let toucher = "rust_nofp::pager::Toucher<T>::touch_every_page";
    assert_kept(
        &lines,
        minflt,
        |s| s.contains(toucher),
        |s| {
            s.starts_with("rust_nofp;_start;")
                && s.contains(";main;std::rt::lang_start_internal;")
                && s.contains(&format!(";rust_nofp::main;rust_nofp::run;{toucher}"))
        },
        "_start..main..rust_nofp::run;touch_every_page",
    );
}

/// Go writes no .eh_frame, only a zlib-compressed .debug_frame: read decompressed, it keeps
/// the caller of runtime.memmove (frameless assembly a frame-pointer walk skips).
#[test]
fn go_keeps_the_caller_of_runtime_memmove_from_its_debug_frame() {
    if !root_or_skip() {
        return;
    }
    let program = go_workload("go_copy");
    let (lines, minflt, summary) = json_stacks("unwind-go", &program, &[], &["20000"]);
    assert_eq!(
        cfi_of(&summary, &program),
        serde_json::json!([".debug_frame"]),
        "go_copy's table, from its .debug_frame: {summary}"
    );
    assert_kept(
        &lines,
        minflt,
        |s| leaf(s) == "runtime.memmove",
        |s| s.ends_with(";runtime.main;main.main;main.copyPages;runtime.memmove"),
        "runtime.main;main.main;main.copyPages;runtime.memmove",
    );
}

/// `omit_fp` as a distribution ships it: its own code's CFI only in .debug_frame (gcc's
/// -fno-asynchronous-unwind-tables), moved with the rest of its debug information into a
/// separate, zlib-compressed debug file; the binary keeps the C runtime's .eh_frame.
fn with_separate_debug_file(copy: &str) -> (PathBuf, PathBuf) {
    let src = root().join("tests/workloads/omit_fp.c");
    let dir = scratch(copy);
    let (out, debug) = (dir.join(copy), dir.join(format!("{copy}.debug")));
    let run = |cmd: &mut Command| assert!(cmd.status().unwrap().success(), "{cmd:?}");
    run(Command::new("cc")
        .args(workload_cflags(&src))
        .arg("-fno-asynchronous-unwind-tables")
        .arg("-o")
        .arg(&out)
        .arg(&src));
    run(Command::new("objcopy")
        .args(["--only-keep-debug", "--compress-debug-sections=zlib"])
        .arg(&out)
        .arg(&debug));
    // Linked by its file name, found beside the binary.
    run(Command::new("objcopy")
        .arg("--strip-debug")
        .arg(format!("--add-gnu-debuglink={copy}.debug"))
        .arg(&out)
        .current_dir(&dir));
    (out, debug)
}

#[test]
fn cfi_in_a_separate_debug_file_is_found_by_debuglink_and_by_build_id() {
    if !root_or_skip() {
        return;
    }
    let check = |lines: &[(String, u64)], minflt: u64| {
        assert_kept(
            lines,
            minflt,
            |s| leaf(s) == "touch_pages_nofp",
            |s| s.contains(";__libc_start_call_main;main;walk_pages;touch_pages_nofp"),
            "main;walk_pages;touch_pages_nofp",
        );
    };
    let (program, debug) = with_separate_debug_file("omit_fp_dbglink");
    let (lines, minflt, summary) = json_stacks("unwind-debuglink", &program, &[], &["20000"]);
    let from_debug = format!("{} .debug_frame", debug.display());
    assert_eq!(
        cfi_of(&summary, &program),
        serde_json::json!([".eh_frame", from_debug])
    );
    check(&lines, minflt);

    // Without the link, by its build id under /usr/lib/debug, where packages install them.
    let (program, debug) = with_separate_debug_file("omit_fp_buildid");
    let ok = Command::new("objcopy")
        .arg("--remove-section=.gnu_debuglink")
        .arg(&program)
        .status()
        .unwrap()
        .success();
    assert!(ok, "objcopy");
    let id = Command::new("readelf").arg("-n").arg(&program).output().unwrap();
    let id = String::from_utf8_lossy(&id.stdout)
        .split("Build ID: ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("a build id")
        .to_string();
    let installed = PathBuf::from(format!(
        "/usr/lib/debug/.build-id/{}/{}.debug",
        &id[..2],
        &id[2..]
    ));
    /// Removes the debug file this test installed, however the test ends.
    struct Installed(PathBuf);
    impl Drop for Installed {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    std::fs::create_dir_all(installed.parent().unwrap()).unwrap();
    std::fs::copy(&debug, &installed).unwrap();
    let _installed = Installed(installed.clone());
    let (lines, minflt, summary) = json_stacks("unwind-buildid", &program, &[], &["20000"]);
    let from_debug = format!("{} .debug_frame", installed.display());
    assert_eq!(
        cfi_of(&summary, &program),
        serde_json::json!([".eh_frame", from_debug])
    );
    check(&lines, minflt);
}

/// `readelf --debug-dump=frames` of `program`: the CFI a workload is meant to exercise is
/// checked to be there (a compiler that stops emitting it would leave the test proving
/// nothing).
fn assert_cfi_has(program: &Path, rule: &str) {
    let dump = Command::new("readelf")
        .arg("--debug-dump=frames")
        .arg(program)
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(dump.contains(rule), "{} has no {rule:?}", program.display());
}

/// A 200 KiB frame: its CFA is rsp plus more than 32 KiB, and in its stack-clash probe loop
/// r11 plus that, when the probes fault on the frame's fresh stack pages.
#[test]
fn a_big_frame_and_its_stack_clash_probes_keep_their_callers() {
    if !root_or_skip() {
        return;
    }
    let program = workload("big_frame");
    assert_cfi_has(&program, "DW_CFA_def_cfa: r11 (r11) ofs 2048");
    let (lines, minflt, _) = stacks_of("unwind-big-frame", &program, "5000", &[]);
    let chain = ";__libc_start_call_main;main;big_frame";
    let probes = |s: &str| leaf(s) == "big_frame";
    let in_memset = |s: &str| leaf(s).starts_with("__memset");
    let (probed, probed_with) = share(&lines, probes, |s| s.ends_with(chain));
    let (memset, memset_with) = share(&lines, in_memset, |s| s.contains(&format!("{chain};__memset")));
    // 5,000 pages by memset, 50 of stack by the probes.
    assert!(
        probed >= 40 && within(probed + memset, minflt, 1.0),
        "{probed} faults in the probes and {memset} in memset, getrusage says {minflt}: {lines:#?}"
    );
    at_least_99_percent(probed_with, probed, "main;big_frame (probing)", &lines);
    at_least_99_percent(memset_with, memset, "main;big_frame;memset", &lines);
}

/// A function that realigns its stack through an argument pointer: its CFA is read from its
/// frame (DW_OP_breg6 N; DW_OP_deref), and its caller's rbp from where rbp points.
#[test]
fn a_realigned_frame_is_unwound_through_its_saved_argument_pointer() {
    if !root_or_skip() {
        return;
    }
    let program = workload("realign");
    assert_cfi_has(&program, "DW_CFA_def_cfa_expression (DW_OP_breg6 (rbp): -");
    assert_cfi_has(&program, "DW_CFA_expression: r6 (rbp) (DW_OP_breg6 (rbp): 0)");
    let (lines, minflt, _) = stacks_of("unwind-realign", &program, "5000", &[]);
    assert_kept(
        &lines,
        minflt,
        |s| leaf(s).starts_with("__memset"),
        |s| {
            s.starts_with("realign;_start;")
                && s.contains(";__libc_start_call_main;main;fill_realigned;__memset")
        },
        "_start..main;fill_realigned;memset",
    );
}

/// Assembly in OpenSSL's style: the CFA is the entry rsp it saved in its frame, plus 8.
#[test]
fn a_cfa_saved_in_the_frame_as_openssl_keeps_it_leads_back_to_main() {
    assert_assembly_kept(
        "saved_rsp",
        "DW_CFA_def_cfa_expression (DW_OP_breg7 (rsp): 40; DW_OP_deref; DW_OP_plus_uconst: 8)",
    );
}

/// Assembly that moved its return address from the word below the CFA to CFA - 24, its CFI
/// saying so: the walk reads it there and goes on to main.
#[test]
fn a_return_address_moved_down_the_frame_is_read_where_its_cfi_says() {
    assert_assembly_kept("moved_ra", "DW_CFA_offset: r16 (rip) at cfa-24");
}

/// The assembly workload `name` (its CFI has `rule`) touches 5,000 pages in `fill_NAME`,
/// called from main: its faults are getrusage's, and 99% of them on _start..main;fill_NAME.
fn assert_assembly_kept(name: &str, rule: &str) {
    if !root_or_skip() {
        return;
    }
    let program = workload(name);
    assert_cfi_has(&program, rule);
    let (lines, minflt, _) = stacks_of(&format!("unwind-{name}"), &program, "5000", &[]);
    let fill = format!("fill_{name}");
    let (root, chain) = (
        format!("{name};_start;"),
        format!(";__libc_start_call_main;main;{fill}"),
    );
    assert_kept(
        &lines,
        minflt,
        |s| leaf(s) == fill,
        |s| s.starts_with(&root) && s.ends_with(&chain),
        &format!("_start..main;{fill}"),
    );
}

/// A walk is taken again from the thread's last only where the stack is the same: every
/// fault of `same_leaf` starts from the same registers, and its two callers take turns eight
/// pages at a time, so most walks are taken again and each turn must be told by the return
/// address on the stack.
#[test]
fn a_walk_is_taken_again_only_where_the_stack_is_the_same() {
    if !root_or_skip() {
        return;
    }
    let pages = 20_000;
    let (lines, minflt, summary) = json_stacks(
        "unwind-same-leaf",
        &workload("same_leaf"),
        &[],
        &[&pages.to_string()],
    );
    let is_leaf = |s: &str| leaf(s) == "touch_one";
    let (total, _) = share(&lines, is_leaf, |_| true);
    assert!(
        within(total, minflt, 1.0),
        "{total} faults in touch_one, getrusage says {minflt}: {lines:#?}"
    );
    for caller in ["via_even", "via_odd"] {
        let (_, n) = share(&lines, is_leaf, |s| {
            s.ends_with(&format!(";main;{caller};touch_one"))
        });
        assert!(
            within(n, pages / 2, 1.0),
            "{n} of {} faults under main;{caller}: {lines:#?}",
            pages / 2
        );
    }
    let unwind = &summary["unwind"];
    let (frames, kept) = (
        unwind["frames"].as_u64().unwrap_or(0),
        unwind["frames_kept"].as_u64().unwrap_or(0),
    );
    assert!(
        kept * 2 > frames,
        "{kept} of {frames} frames taken again: {unwind:#}"
    );
}

/// A library run as soon as it is loaded (as CPython runs an extension module it imports):
/// its table is asked for as it is mapped, and its first faults come before it is built. Their
/// stacks are copied to userspace and walked there once it is in: the caller that a
/// frame-pointer step from the library's frameless leaf skips is kept on every fault, but
/// those the kernel side left as it walked them, and said so (a C loop faults faster than
/// 8 KiB copies drain on two CPUs: seen on 2 runs of 8, 941 and 1,427 of 16,384).
#[test]
fn a_library_run_as_it_loads_is_walked_from_copies_of_its_stacks() {
    if !root_or_skip() {
        return;
    }
    let library = workload("late_lib");
    let (lines, minflt, summary) = json_stacks(
        "unwind-late",
        &workload("late_table"),
        &[],
        &[library.to_str().unwrap(), "16384"],
    );
    let unwind = &summary["unwind"];
    let late = unwind["stacks_walked_late"].as_u64().unwrap_or(0);
    let left = unwind["stacks_late_lost"].as_u64().unwrap_or(0);
    let (total, with) = share(
        &lines,
        |s| leaf(s) == "lib_touch",
        |s| s.ends_with(";main;via_lib;lib_touch"),
    );
    assert!(
        within(total, minflt, 1.0),
        "{total} faults in lib_touch, getrusage says {minflt}: {lines:#?}"
    );
    assert!(late > 0, "no stack met the library's table loading: {unwind:#}");
    assert!(
        left < total / 4,
        "{left} of {total} stacks left as walked: {unwind:#}"
    );
    at_least_99_percent(
        with + left,
        total,
        "main;via_lib;lib_touch, or left as walked",
        &lines,
    );
}

/// A fault in a signal handler: through the kernel's signal frame to the code the signal
/// interrupted, and on to main (a frame-pointer walk skips the interrupted function's caller).
#[test]
fn signal_handler_stacks_go_through_the_signal_frame() {
    if !root_or_skip() {
        return;
    }
    let (lines, minflt, _) = stacks_of("unwind-signal", &workload("in_signal"), "5000", &[]);
    assert_kept(
        &lines,
        minflt,
        |s| leaf(s) == "touch_in_handler",
        |s| {
            s.starts_with("in_signal;_start;")
                && s.contains(";main;deliver;")
                && s.ends_with(";on_signal;touch_in_handler")
        },
        "_start..main;deliver..on_signal;touch_in_handler",
    );
}

/// Where frame pointers were right, the CFI walk gives the same frames; it adds only the
/// callers the frame-pointer walk could not reach (the C library's, built without them).
#[test]
fn stacks_that_frame_pointers_got_right_stay_the_same() {
    if !root_or_skip() {
        return;
    }
    let program = workload("anon_writer");
    let touch = |lines: &[(String, u64)]| -> (String, u64) {
        let hits: Vec<_> = lines.iter().filter(|(s, _)| leaf(s) == "touch_pages").collect();
        assert_eq!(hits.len(), 1, "one touch_pages stack: {lines:#?}");
        hits[0].clone()
    };
    let (fp, _, _) = stacks_of("unwind-same-fp", &program, "20000", &["--unwind", "fp", "-v"]);
    let (cfi, _, _) = stacks_of("unwind-same-cfi", &program, "20000", &["-v"]);
    let ((fp, fp_n), (cfi, cfi_n)) = (touch(&fp), touch(&cfi));
    // With -v every frame carries its address: the same frames, to the byte.
    let fp_frames = fp.split_once(';').unwrap().1;
    assert!(cfi.ends_with(&format!(";{fp_frames}")), "cfi {cfi}\nfp  {fp}");
    assert!(within(cfi_n, fp_n, 1.0), "{cfi_n} vs {fp_n}");
}

/// A copy of `program` with its `.eh_frame` changed by `edit` (None: removed).
fn with_eh_frame(program: &Path, copy: &str, edit: Option<fn(&mut [u8])>) -> PathBuf {
    let dir = scratch(copy);
    let out = dir.join(copy);
    std::fs::copy(program, &out).unwrap();
    let status = match edit {
        None => Command::new("objcopy")
            .args(["--remove-section=.eh_frame", "--remove-section=.eh_frame_hdr"])
            .arg(&out)
            .status(),
        Some(edit) => {
            let dump = dir.join("eh_frame.bin");
            let ok = Command::new("objcopy")
                .arg(format!("--dump-section=.eh_frame={}", dump.display()))
                .arg(&out)
                .status()
                .unwrap()
                .success();
            assert!(ok, "dumping .eh_frame");
            let mut bytes = std::fs::read(&dump).unwrap();
            edit(&mut bytes);
            std::fs::write(&dump, &bytes).unwrap();
            Command::new("objcopy")
                .arg(format!("--update-section=.eh_frame={}", dump.display()))
                .arg(&out)
                .status()
        }
    };
    assert!(status.unwrap().success(), "objcopy on {}", out.display());
    out
}

/// Code without CFI (stripped, corrupt, or written at run time) is walked by frame pointer:
/// no fault lost, no crash, and the run's end says which code and why.
#[test]
fn code_without_usable_cfi_falls_back_to_the_frame_pointer_and_says_so() {
    if !root_or_skip() {
        return;
    }
    let anon = workload("anon_writer");
    let stripped = with_eh_frame(&anon, "anon_nocfi", None);
    let (lines, minflt, stderr) = stacks_of("unwind-stripped", &stripped, "5000", &[]);
    assert_kept(
        &lines,
        minflt,
        |s| leaf(s) == "touch_pages",
        |s| s.contains(";main;touch_pages"),
        "main;touch_pages by frame pointer",
    );
    assert!(
        stderr.contains("by frame pointer: anon_nocfi: no .eh_frame"),
        "says why: {stderr}"
    );

    // Every FDE's length made huge: the section cannot be walked.
    let corrupt = with_eh_frame(
        &anon,
        "anon_badcfi",
        Some(|b: &mut [u8]| {
            let third = b.len() / 3;
            b[third..].fill(0xff)
        }),
    );
    let (lines, minflt, stderr) = stacks_of("unwind-corrupt", &corrupt, "5000", &[]);
    assert_kept(
        &lines,
        minflt,
        |s| leaf(s) == "touch_pages",
        |s| s.contains(";main;touch_pages"),
        "main;touch_pages",
    );
    assert!(stderr.contains("unwind: cfi"), "{stderr}");

    // Machine code in anonymous memory, as a JIT writes it. Only the faults of the store in
    // the JIT code are the workload's ground truth: they are told by their leaf's address
    // (-v keeps it), not by an [unknown] name other code may share (the loader's frames, on
    // a machine whose first run finds nothing cached).
    let out = scratch("unwind-jit").join("stacks.json");
    let (truth, stderr) = pfault_on_program(
        &["stackcount", "-U", "-v", "-o", "json"],
        &out,
        &workload("jit_writer"),
        &["5000"],
    );
    let (jit, minflt) = (num(&truth, "jit"), num(&truth, "minflt"));
    let rows = json_lines(&out);
    let total: u64 = rows
        .iter()
        .filter(|r| r["ustack"][0]["addr"].as_u64() == Some(jit))
        .map(|r| r["count"].as_u64().unwrap_or(0))
        .sum();
    assert!(
        within(total, minflt, 1.0),
        "{total} faults in the JIT code at {jit:#x} vs {minflt}: {rows:#?}"
    );
    let unwind = &summary(&stderr)["unwind"];
    let (frames, by_fp) = (unwind["frames"].as_u64(), unwind["frames_by_fp"].as_u64());
    assert!(
        by_fp.unwrap_or(0) >= total && frames > by_fp,
        "the JIT frames are counted as walked by frame pointer: {unwind}"
    );
}

/// `trace -U` takes the same walk: every fault inside memset names its caller.
#[test]
fn trace_user_stacks_keep_the_caller_of_memset() {
    if !root_or_skip() {
        return;
    }
    let out = scratch("unwind-trace").join("trace.json");
    let truth = pfault_on(&["trace", "-U", "-o", "json"], &out, "memset_caller", &["2000"]);
    let pid = num(&truth, "pid");
    let mut total = 0;
    let mut with = 0;
    for e in json_lines(&out).iter().filter(|e| e["pid"].as_u64() == Some(pid)) {
        let names: Vec<&str> = e["ustack"]
            .as_array()
            .map(|a| a.iter().filter_map(|f| f["symbol"].as_str()).collect())
            .unwrap_or_default();
        if names.first().is_some_and(|n| n.starts_with("__memset")) {
            total += 1;
            if names.get(1..3) == Some(&["fill_pages", "main"][..]) {
                with += 1;
            }
        }
    }
    assert!(
        within(total, num(&truth, "minflt"), 1.0),
        "{total} events in memset vs {truth:?}"
    );
    assert!(
        with * 100 >= total * 99,
        "{with} of {total} name fill_pages, main"
    );
}

/// The run's count of frames walked by frame pointer because of `why` (`by_fp_because`).
fn by_fp_because(summary: &serde_json::Value, why: &str) -> u64 {
    let unwind = &summary["unwind"];
    let reasons = unwind["by_fp_because"].as_object().expect("by_fp_because");
    let sum: u64 = reasons.values().filter_map(|v| v.as_u64()).sum();
    assert_eq!(
        Some(sum),
        unwind["frames_by_fp"].as_u64(),
        "every frame walked by frame pointer has one reason: {unwind}"
    );
    reasons[why].as_u64().unwrap()
}

/// Frames of a binary stripped of its CFI are counted as walked by frame pointer for that
/// reason, one per frame-pointer step through its code; -v marks them.
#[test]
fn frames_of_a_binary_without_cfi_are_counted_and_marked() {
    if !root_or_skip() {
        return;
    }
    let stripped = with_eh_frame(&workload("deep_recursion"), "deep_nocfi", None);
    // main -> recurse x4 -> touch_pages: 6 steps through the binary's code per fault, the
    // last (main's) to libc's __libc_start_call_main.
    let (lines, minflt, summary) = json_stacks("unwind-fp-nocfi", &stripped, &[], &["5000", "3"]);
    let total = assert_kept(
        &lines,
        minflt,
        |s| leaf(s) == "touch_pages",
        |s| s.contains(";main;recurse;recurse;recurse;recurse;touch_pages"),
        "main;recurse x4;touch_pages",
    );
    let no_cfi = by_fp_because(&summary, "no_cfi");
    // The loader's and exit's faults add a few steps through the binary's code.
    assert!(
        no_cfi >= 6 * total && no_cfi <= 6 * total + 6 * 100,
        "{no_cfi} frame-pointer steps for no CFI, {total} faults of 6 steps: {summary}"
    );
    assert_eq!(by_fp_because(&summary, "table_space_full"), 0, "{summary}");

    let out = scratch("unwind-fp-marked").join("stacks.json");
    pfault_on_program(
        &["stackcount", "-U", "-v", "-o", "json"],
        &out,
        &stripped,
        &["5000", "3"],
    );
    let rows = json_lines(&out);
    let touch = rows
        .iter()
        .filter(|r| r["ustack"][0]["symbol"].as_str() == Some("touch_pages"))
        .max_by_key(|r| r["count"].as_u64())
        .expect("a touch_pages stack");
    let marked: Vec<(&str, bool)> = touch["ustack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["symbol"].as_str().unwrap_or("?"),
                f["by_fp"].as_bool() == Some(true),
            )
        })
        .collect();
    // The leaf is where the fault was; each caller up to libc's was found by frame pointer,
    // and libc's own CFI walks on from there.
    let want = [
        ("touch_pages", false),
        ("recurse", true),
        ("recurse", true),
        ("recurse", true),
        ("recurse", true),
        ("main", true),
        ("__libc_start_call_main", true),
        ("__libc_start_main_impl", false),
        ("_start", false),
    ];
    assert_eq!(marked, want, "{touch:#}");
}

/// A stack deeper than the 127 frames kept ends in a `[truncated]` frame, in every format.
#[test]
fn a_stack_past_the_frame_limit_ends_in_a_truncated_frame() {
    if !root_or_skip() {
        return;
    }
    let program = workload("deep_recursion");
    let (lines, minflt, _) = json_stacks("unwind-truncated", &program, &[], &["5000", "200"]);
    let deep = |s: &str| leaf(s) == "touch_pages";
    assert_kept(
        &lines,
        minflt,
        deep,
        |s| {
            let frames: Vec<&str> = s.split(';').collect();
            frames.len() == 127
                && frames[0] == "[truncated]"
                && frames[1..126].iter().all(|f| *f == "recurse")
        },
        "[truncated];recurse x125;touch_pages",
    );

    let (lines, _, _) = stacks_of("unwind-truncated-folded", &program, "5000", &[]);
    assert_kept(
        &lines,
        minflt,
        deep,
        |s| s.starts_with("deep_recursion;[truncated];recurse;"),
        "folded: [truncated] at the root",
    );

    // A stack that fits has no marker.
    let (lines, _, _) = json_stacks("unwind-not-truncated", &program, &[], &["5000", "100"]);
    assert!(
        lines
            .iter()
            .all(|(s, _)| !s.contains("[truncated]") && !s.contains("[unwind stopped")),
        "{lines:#?}"
    );
}

/// A table that does not fit in `--unwind-mb` leaves its binary's frames to the frame
/// pointer, counted for that reason and said in the text summary.
#[test]
fn frames_whose_table_found_no_room_are_counted_as_table_space_full() {
    if !root_or_skip() {
        return;
    }
    let program = workload("big_cfi");
    let (lines, minflt, summary) = json_stacks("unwind-no-room", &program, &["--unwind-mb", "1"], &["5000"]);
    let total = assert_kept(
        &lines,
        minflt,
        |s| leaf(s) == "touch_pages",
        |s| s.contains(";main;touch_pages"),
        "main;touch_pages by frame pointer",
    );
    // touch_pages -> main -> libc: 2 steps through the binary's code per fault.
    let full = by_fp_because(&summary, "table_space_full");
    assert!(
        full >= 2 * total && full <= 2 * total + 2 * 100,
        "{full} frame-pointer steps for want of room, {total} faults of 2 steps: {summary}"
    );
    assert_eq!(by_fp_because(&summary, "no_cfi"), 0, "{summary}");

    let (_, _, stderr) = stacks_of("unwind-no-room-text", &program, "5000", &["--unwind-mb", "1"]);
    assert!(
        stderr.contains("table space full (raise --unwind-mb)"),
        "the end-of-run line says why: {stderr}"
    );
}
