//! JSON of any depth read into a `Value` without failing: serde_json stops
//! at 128 levels, and content the store holds (an old import, a hand-edited
//! database) may nest deeper. Deeper values are skipped (without recursion)
//! and stand as [`TOO_DEEP`].

use serde_json::Value;

/// What stands in for a value nested deeper than the cut.
pub const TOO_DEEP: &str = "[nested too deep to show]";

/// Parses `text`, replacing values nested deeper than `depth` with
/// [`TOO_DEEP`]; also says whether anything was cut.
pub fn parse_capped(text: &str, depth: usize) -> serde_json::Result<(Value, bool)> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_str(text);
    let cut = std::cell::Cell::new(false);
    let v = Capped { depth, cut: &cut }.deserialize(&mut de)?;
    de.end()?;
    Ok((v, cut.get()))
}

/// A `Value` builder that stops at a depth.
struct Capped<'c> {
    depth: usize,
    cut: &'c std::cell::Cell<bool>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Capped<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Capped<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        if self.depth == 0 {
            self.cut.set(true);
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            return Ok(TOO_DEEP.into());
        }
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Capped {
            depth: self.depth - 1,
            cut: self.cut,
        })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        if self.depth == 0 {
            self.cut.set(true);
            while map
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            return Ok(TOO_DEEP.into());
        }
        let mut out = serde_json::Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(Capped {
                depth: self.depth - 1,
                cut: self.cut,
            })?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}
