//! Whether a value serializes to the very JSON bytes it was read from.
//!
//! A start drops the bytes of every value its decoded field writes back exactly (as
//! [`KvConfig::encode`](crate::KvConfig::encode) would, with `serde_json`). Asking `serde_json`
//! means writing every value out again: at 50,000 string keys of 100 bytes that was a third of a
//! start's decode. Strings, integers and booleans are compared in place instead; any other shape
//! (floats, sequences, maps, structs, enums with data) and every string that needs escaping is
//! written out by `serde_json` and compared, as before.

use serde::ser::{Impossible, Serialize, Serializer};

/// Whether `value` serializes with `serde_json` to exactly `raw`. `buf` is scratch space for the
/// shapes compared by writing them out. Fails when the `Serialize` impl fails.
pub(crate) fn encodes_to<T: Serialize + ?Sized>(value: &T, raw: &[u8], buf: &mut Vec<u8>) -> Result<bool, String> {
    match value.serialize(InPlace { raw }) {
        Ok(same) => Ok(same),
        Err(Unsure) => {
            buf.clear();
            serde_json::to_writer(&mut *buf, value).map_err(|e| e.to_string())?;
            Ok(buf.as_slice() == raw)
        }
    }
}

/// `raw` read as a `T` when `T` is `String` and `raw` a JSON string with no escape and nothing
/// to escape (`"` + text + `"`): exactly what `serde_json` reads, without its parser, and a value
/// it writes back as `raw`. `None` for any other type or text (read by `serde_json` then).
pub(crate) fn plain_string<T: 'static>(raw: &[u8]) -> Option<T> {
    if std::any::TypeId::of::<T>() != std::any::TypeId::of::<String>() {
        return None;
    }
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if needs_escape(inner) {
        return None;
    }
    let mut text = Some(std::str::from_utf8(inner).ok()?.to_owned());
    // `T` is `String`: the downcast always succeeds.
    (&mut text as &mut dyn std::any::Any).downcast_mut::<Option<T>>()?.take()
}

/// A comparison that cannot be made in place: write the value out and compare.
#[derive(Debug)]
struct Unsure;

impl std::fmt::Display for Unsure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not comparable in place")
    }
}

impl std::error::Error for Unsure {}

impl serde::ser::Error for Unsure {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Unsure
    }
}

/// Compares what a `Serialize` impl emits with `raw`, for the shapes `serde_json` writes without
/// any choice: an integer's decimal digits, `true` / `false`, and a string that needs no escape
/// between its quotes. Any other shape is `Err(Unsure)`.
struct InPlace<'a> {
    raw: &'a [u8],
}

impl InPlace<'_> {
    fn integer<I: itoa::Integer>(self, v: I) -> Result<bool, Unsure> {
        Ok(itoa::Buffer::new().format(v).as_bytes() == self.raw)
    }
}

/// Whether `serde_json` escapes any byte of `s` (`"`, `\` and the control characters below
/// 0x20; it writes every other byte as is). Branch-free over the bytes, so it vectorizes.
fn needs_escape(s: &[u8]) -> bool {
    s.iter().fold(false, |any, &b| any | (b < 0x20) | (b == b'"') | (b == b'\\'))
}

macro_rules! integers {
    ($($method:ident: $t:ty),*) => {
        $(fn $method(self, v: $t) -> Result<bool, Unsure> {
            self.integer(v)
        })*
    };
}

macro_rules! unsure {
    ($($method:ident: $t:ty),*) => {
        $(fn $method(self, _: $t) -> Result<bool, Unsure> {
            Err(Unsure)
        })*
    };
}

impl Serializer for InPlace<'_> {
    type Ok = bool;
    type Error = Unsure;
    type SerializeSeq = Impossible<bool, Unsure>;
    type SerializeTuple = Impossible<bool, Unsure>;
    type SerializeTupleStruct = Impossible<bool, Unsure>;
    type SerializeTupleVariant = Impossible<bool, Unsure>;
    type SerializeMap = Impossible<bool, Unsure>;
    type SerializeStruct = Impossible<bool, Unsure>;
    type SerializeStructVariant = Impossible<bool, Unsure>;

    integers!(serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64, serialize_i128: i128);
    integers!(serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64, serialize_u128: u128);
    unsure!(serialize_f32: f32, serialize_f64: f64, serialize_bytes: &[u8]);

    fn serialize_bool(self, v: bool) -> Result<bool, Unsure> {
        Ok(self.raw == if v { &b"true"[..] } else { &b"false"[..] })
    }

    fn serialize_char(self, v: char) -> Result<bool, Unsure> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(self, v: &str) -> Result<bool, Unsure> {
        // A string with no byte to escape is written as `"` + the string + `"`: compared here.
        // One that needs escapes is written out by `serde_json` and compared there.
        if needs_escape(v.as_bytes()) {
            return Err(Unsure);
        }
        let raw = self.raw;
        Ok(raw.len() == v.len() + 2 && raw[0] == b'"' && raw[raw.len() - 1] == b'"' && &raw[1..raw.len() - 1] == v.as_bytes())
    }

    fn serialize_none(self) -> Result<bool, Unsure> {
        Err(Unsure)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<bool, Unsure> {
        // `serde_json` writes `Some(v)` as `v`.
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<bool, Unsure> {
        Err(Unsure)
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<bool, Unsure> {
        Err(Unsure)
    }

    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<bool, Unsure> {
        // `serde_json` writes a unit variant as its name, a string.
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Result<bool, Unsure> {
        // `serde_json` writes a newtype struct as its content.
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(self, _: &'static str, _: u32, _: &'static str, _: &T) -> Result<bool, Unsure> {
        Err(Unsure)
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Unsure> {
        Err(Unsure)
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Unsure> {
        Err(Unsure)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, Unsure> {
        Err(Unsure)
    }

    fn serialize_tuple_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> Result<Self::SerializeTupleVariant, Unsure> {
        Err(Unsure)
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Unsure> {
        Err(Unsure)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Unsure> {
        Err(Unsure)
    }

    fn serialize_struct_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> Result<Self::SerializeStructVariant, Unsure> {
        Err(Unsure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// The answer `serde_json` gives: write the value out and compare.
    fn reference<T: Serialize + ?Sized>(value: &T, raw: &[u8]) -> bool {
        serde_json::to_vec(value).is_ok_and(|v| v == raw)
    }

    fn agrees<T: Serialize + ?Sized>(value: &T, raw: &[u8]) {
        let got = encodes_to(value, raw, &mut Vec::new()).expect("serializes");
        assert_eq!(got, reference(value, raw), "{:?}", String::from_utf8_lossy(raw));
    }

    #[derive(serde::Serialize)]
    struct Port(u16);

    #[derive(serde::Serialize)]
    enum Level {
        Debug,
        #[serde(rename = "sp\"ace")]
        Odd,
    }

    #[test]
    fn agrees_with_serde_json_on_every_shape() {
        let raws: &[&[u8]] = &[
            b"\"abc\"", b"abc", b"\"abc", b"\"ab\\\"c\"", b"\"a\\u0001\"", b"\"\\u00e9\"", b"\"\xc3\xa9\"", b"\"\"",
            b"\"Debug\"", b"\"sp\\\"ace\"", b"8080", b"-5", b"08080", b"8080 ", b"true", b"false", b"null", b"1.5",
            b"[1,2]", b"{\"a\":1}", b"\"a/b\"", b"\"a\\/b\"", b"\"\\u0061bc\"", b"\"\x7f\"",
        ];
        for raw in raws {
            for s in ["abc", "ab\"c", "a\u{1}", "é", "", "Debug", "sp\"ace", "a/b", "\u{7f}", "8080"] {
                agrees(s, raw);
                agrees(&Some(s.to_string()), raw);
            }
            for c in ['a', '"', 'é', '\u{1}'] {
                agrees(&c, raw);
            }
            agrees(&8080u16, raw);
            agrees(&-5i64, raw);
            agrees(&u128::MAX, raw);
            agrees(&Port(8080), raw);
            agrees(&true, raw);
            agrees(&false, raw);
            agrees(&1.5f64, raw);
            agrees(&Option::<u8>::None, raw);
            agrees(&Level::Debug, raw);
            agrees(&Level::Odd, raw);
            agrees(&vec![1, 2], raw);
            agrees(&BTreeMap::from([("a", 1)]), raw);
            agrees(&(), raw);
        }
    }

    #[test]
    fn a_plain_string_is_read_as_serde_json_reads_it_and_written_back_as_it_was() {
        let mut raws: Vec<Vec<u8>> = [
            &b"\"abc\""[..], b"abc", b"\"abc", b"abc\"", b"\"", b"\"\"", b"\"ab\\\"c\"", b"\"a\\u0001\"", b"\"\xc3\xa9\"",
            b"\"\xff\"", b"\"a\tb\"", b" \"abc\"", b"\"abc\" ", b"\"a\"b\"", b"\"a/b\"", b"\"\x7f\"", b"null", b"1",
        ]
        .iter()
        .map(|r| r.to_vec())
        .collect();
        raws.extend((0u8..0x80).map(|b| vec![b'"', b'x', b, b'y', b'"']));
        for raw in &raws {
            let fast = plain_string::<String>(raw);
            if let Some(s) = &fast {
                assert_eq!(serde_json::from_slice::<String>(raw).ok().as_ref(), Some(s), "{raw:?}");
                assert_eq!(serde_json::to_vec(s).unwrap(), *raw, "written back as it was: {raw:?}");
            } else {
                // Left to serde_json: only texts it does not read as a plain quoted string.
                let inner = raw.strip_prefix(b"\"").and_then(|r| r.strip_suffix(b"\""));
                assert!(inner.map_or(true, |i| needs_escape(i) || std::str::from_utf8(i).is_err()), "{raw:?}");
            }
            assert!(plain_string::<Option<String>>(raw).is_none() && plain_string::<u32>(raw).is_none());
        }
        assert_eq!(plain_string::<String>(b"\"abc\"").as_deref(), Some("abc"));
    }

    #[test]
    fn every_ascii_byte_in_a_string_agrees() {
        for b in 0u8..0x80 {
            let s = format!("x{}y", b as char);
            agrees(s.as_str(), format!("\"{s}\"").as_bytes());
            agrees(s.as_str(), &serde_json::to_vec(&s).expect("serializes"));
        }
    }

    #[test]
    fn a_failing_serialize_impl_is_an_error() {
        struct Fails;
        impl Serialize for Fails {
            fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("no"))
            }
        }
        assert!(encodes_to(&Fails, b"1", &mut Vec::new()).is_err());
    }
}
