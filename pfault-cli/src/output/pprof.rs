//! pprof profiles (profile.proto, gzipped), as `go tool pprof`, Pyroscope and Parca read them.
//!
//! The message types are profile.proto's, declared for prost's derive (which encodes them);
//! [`Builder`] interns strings, functions, mappings and locations as the format wants.

use std::{collections::HashMap, io::Write};

use anyhow::Result;
use flate2::{write::GzEncoder, Compression};
use prost::Message;

use crate::symbolize::Frame;

/// perftools.profiles.Profile.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub(crate) sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub(crate) sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub(crate) mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    pub(crate) location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub(crate) function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    pub(crate) string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    pub(crate) time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub(crate) duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub(crate) period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub(crate) period: i64,
    /// The sample type pprof shows unless told (`-sample_index`): a string index.
    #[prost(int64, tag = "14")]
    pub(crate) default_sample_type: i64,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct ValueType {
    #[prost(int64, tag = "1")]
    pub(crate) r#type: i64,
    #[prost(int64, tag = "2")]
    pub(crate) unit: i64,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Sample {
    /// Leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub(crate) location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub(crate) value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    pub(crate) label: Vec<Label>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Label {
    #[prost(int64, tag = "1")]
    pub(crate) key: i64,
    #[prost(int64, tag = "2")]
    pub(crate) str: i64,
    #[prost(int64, tag = "3")]
    pub(crate) num: i64,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Mapping {
    #[prost(uint64, tag = "1")]
    pub(crate) id: u64,
    #[prost(uint64, tag = "2")]
    pub(crate) memory_start: u64,
    #[prost(uint64, tag = "3")]
    pub(crate) memory_limit: u64,
    #[prost(uint64, tag = "4")]
    pub(crate) file_offset: u64,
    #[prost(int64, tag = "5")]
    pub(crate) filename: i64,
    #[prost(int64, tag = "6")]
    pub(crate) build_id: i64,
    #[prost(bool, tag = "7")]
    pub(crate) has_functions: bool,
    #[prost(bool, tag = "8")]
    pub(crate) has_filenames: bool,
    #[prost(bool, tag = "9")]
    pub(crate) has_line_numbers: bool,
    #[prost(bool, tag = "10")]
    pub(crate) has_inline_frames: bool,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Location {
    #[prost(uint64, tag = "1")]
    pub(crate) id: u64,
    #[prost(uint64, tag = "2")]
    pub(crate) mapping_id: u64,
    #[prost(uint64, tag = "3")]
    pub(crate) address: u64,
    /// Inlined callees first, the function they were inlined into last.
    #[prost(message, repeated, tag = "4")]
    pub(crate) line: Vec<Line>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Line {
    #[prost(uint64, tag = "1")]
    pub(crate) function_id: u64,
    #[prost(int64, tag = "2")]
    pub(crate) line: i64,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Function {
    #[prost(uint64, tag = "1")]
    pub(crate) id: u64,
    #[prost(int64, tag = "2")]
    pub(crate) name: i64,
    #[prost(int64, tag = "3")]
    pub(crate) system_name: i64,
    #[prost(int64, tag = "4")]
    pub(crate) filename: i64,
}

/// The module kernel frames are mapped to, as perf names it.
const KERNEL: &str = "[kernel.kallsyms]";

/// A sample's label value: a string (`comm`, `kind`) or a number (`pid`).
pub(crate) enum LabelValue<'a> {
    Str(&'a str),
    Num(i64),
}

/// Builds one profile of page faults.
pub(crate) struct Builder {
    profile: Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(i64, i64), u64>,
    /// By module and build id: a container's libc.so.6 is not the host's.
    mappings: HashMap<(String, String), u64>,
    locations: HashMap<Vec<(u64, i64, u64)>, u64>,
}

impl Builder {
    /// A profile `duration_ns` long, ending now, whose samples carry a value of each of
    /// `sample_types` (type, unit); the first is the one shown by default, and the period's.
    pub(crate) fn new(duration_ns: i64, sample_types: &[(&str, &str)]) -> Builder {
        let mut b = Builder {
            profile: Profile::default(),
            strings: HashMap::new(),
            functions: HashMap::new(),
            mappings: HashMap::new(),
            locations: HashMap::new(),
        };
        // string_table[0] must be "".
        b.string("");
        b.profile.sample_type = sample_types
            .iter()
            .map(|(t, unit)| ValueType {
                r#type: b.string(t),
                unit: b.string(unit),
            })
            .collect();
        b.profile.period_type = b.profile.sample_type.first().cloned();
        b.profile.default_sample_type = b.profile.period_type.as_ref().map_or(0, |t| t.r#type);
        b.profile.period = 1;
        b.profile.duration_nanos = duration_ns;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        b.profile.time_nanos = now - duration_ns;
        b
    }

    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_string());
        self.strings.insert(s.to_string(), i);
        i
    }

    fn function(&mut self, name: &str, file: Option<&str>) -> u64 {
        let key = (self.string(name), self.string(file.unwrap_or("")));
        if let Some(&id) = self.functions.get(&key) {
            return id;
        }
        let id = self.profile.function.len() as u64 + 1;
        self.profile.function.push(Function {
            id,
            name: key.0,
            system_name: key.0,
            filename: key.1,
        });
        self.functions.insert(key, id);
        id
    }

    fn mapping(&mut self, module: &str, build_id: &str) -> u64 {
        let key = (module.to_string(), build_id.to_string());
        if let Some(&id) = self.mappings.get(&key) {
            return id;
        }
        let id = self.profile.mapping.len() as u64 + 1;
        let mapping = Mapping {
            id,
            filename: self.string(module),
            build_id: self.string(build_id),
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
            ..Default::default()
        };
        self.profile.mapping.push(mapping);
        self.mappings.insert(key, id);
        id
    }

    /// Locations of a stack, leaf first: a function and the callees inlined into it at one
    /// address make one location of several lines.
    fn locations(&mut self, frames: &[Frame], kernel: bool) -> Vec<u64> {
        let mut ids = Vec::new();
        let mut start = 0;
        for (i, f) in frames.iter().enumerate() {
            if f.inlined {
                continue;
            }
            let group = &frames[start..=i];
            start = i + 1;
            let module = match (&f.module, kernel) {
                (_, true) => KERNEL.to_string(),
                (Some(m), false) => m.clone(),
                (None, false) => "[unknown]".to_string(),
            };
            let mapping_id = self.mapping(&module, f.build_id.as_deref().unwrap_or_default());
            let lines: Vec<(u64, i64)> = group
                .iter()
                .map(|g| {
                    let name = g.name();
                    (
                        self.function(&name, g.file.as_deref()),
                        g.line.unwrap_or(0) as i64,
                    )
                })
                .collect();
            let key: Vec<(u64, i64, u64)> = lines.iter().map(|&(f, l)| (f, l, group[0].addr)).collect();
            let next = self.profile.location.len() as u64 + 1;
            let id = *self.locations.entry(key).or_insert(next);
            if id == next {
                self.profile.location.push(Location {
                    id,
                    mapping_id,
                    address: f.addr,
                    line: lines
                        .into_iter()
                        .map(|(function_id, line)| Line { function_id, line })
                        .collect(),
                });
            }
            ids.push(id);
        }
        ids
    }

    /// Adds a sample of a stack (kernel frames, then user frames, each leaf first): a value
    /// of each sample type.
    pub(crate) fn add(
        &mut self,
        kstack: &[Frame],
        ustack: &[Frame],
        values: &[u64],
        labels: &[(&str, LabelValue)],
    ) {
        let mut location_id = self.locations(kstack, true);
        location_id.extend(self.locations(ustack, false));
        let label = labels
            .iter()
            .map(|(k, v)| {
                let key = self.string(k);
                match v {
                    LabelValue::Str(s) => Label {
                        key,
                        str: self.string(s),
                        num: 0,
                    },
                    LabelValue::Num(n) => Label { key, str: 0, num: *n },
                }
            })
            .collect();
        self.profile.sample.push(Sample {
            location_id,
            value: values.iter().map(|&v| v as i64).collect(),
            label,
        });
    }

    /// The profile, gzipped, as pprof files and HTTP endpoints carry it.
    pub(crate) fn gzipped(&self) -> Result<Vec<u8>> {
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(&self.profile.encode_to_vec())?;
        Ok(gz.finish()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(symbol: &str, addr: u64, inlined: bool) -> Frame {
        Frame {
            addr,
            symbol: Some(symbol.into()),
            offset: 0,
            module: Some("/bin/prog".into()),
            file: Some("prog.c".into()),
            line: Some(7),
            inlined,
            build_id: None,
            by_fp: false,
        }
    }

    #[test]
    fn a_profile_decodes_with_its_samples_locations_and_inlined_lines() {
        let mut b = Builder::new(1_000_000_000, &[("faults", "count"), ("bytes", "bytes")]);
        let stack = [
            frame("inner", 0x10, true),
            frame("outer", 0x10, false),
            frame("main", 0x20, false),
        ];
        b.add(
            &[],
            &stack,
            &[5, 20480],
            &[("comm", LabelValue::Str("prog")), ("pid", LabelValue::Num(42))],
        );
        b.add(
            &[],
            &stack[2..],
            &[3, 12288],
            &[("comm", LabelValue::Str("prog"))],
        );
        let gz = b.gzipped().unwrap();
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut raw).unwrap();
        let p = Profile::decode(&raw[..]).unwrap();
        assert_eq!(p.string_table[0], "");
        let s = |i: i64| p.string_table[i as usize].as_str();
        let types: Vec<(&str, &str)> = p.sample_type.iter().map(|t| (s(t.r#type), s(t.unit))).collect();
        assert_eq!(types, [("faults", "count"), ("bytes", "bytes")]);
        assert_eq!(s(p.default_sample_type), "faults");
        assert_eq!(p.sample.len(), 2);
        assert_eq!(p.sample[0].value, vec![5, 20480]);
        // Two locations: outer (with inner inlined) and main, shared by both samples.
        assert_eq!(p.location.len(), 2);
        assert_eq!(p.sample[0].location_id, vec![1, 2]);
        assert_eq!(p.sample[1].location_id, vec![2]);
        let names: Vec<&str> = p.location[0]
            .line
            .iter()
            .map(|l| s(p.function[l.function_id as usize - 1].name))
            .collect();
        assert_eq!(names, ["inner", "outer"]);
        assert_eq!(s(p.mapping[0].filename), "/bin/prog");
        let pid = p.sample[0].label.iter().find(|l| s(l.key) == "pid").unwrap();
        assert_eq!(pid.num, 42);
    }
}
