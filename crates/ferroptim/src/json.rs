//! JSON with every float, finite or not.
//!
//! JSON has no NaN or infinity, and `serde_json` writes them as `null`,
//! which then reads back as "invalid type: null, expected f64": a learning
//! rate a scheduler drove to NaN, or LBFGS's `prev_loss` of NaN, would save
//! and never load. ferroptim writes a non-finite float as the string
//! `"nan"`, `"inf"` or `"-inf"` (as its tensors always have) and reads
//! those strings back wherever a float is expected:
//!
//! - `to_value` / `from_value` (inside the crate): `serde_json`'s, with that
//!   convention for every `f64`/`f32` inside (hyperparameters, scheduler states);
//! - [`number`] / [`as_f64`]: one float as a JSON value, and back;
//! - `float` (inside the crate): the same as a `#[serde(with = ...)]` module for one field.
//!
//! Any other string stays a string. `from_value` is for typed targets:
//! where a type asks for "anything" (an untagged enum such as
//! `StateValue`), `"nan"` is read as the float; a `serde_json::Value`
//! target would then hold `null`, so raw values are read with serde_json.

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};
use serde::ser::{self, Serialize};
use serde::{Deserialize, Deserializer, Serializer};
use serde_json::{Map, Value};

/// `skip_serializing_if` for a flag a group holds only once set (`cautious`).
pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// `skip_serializing_if` for a group counter held only from its first step.
pub(crate) fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A float as ferroptim writes it in JSON: a number, or `"nan"`, `"inf"`, `"-inf"`.
#[derive(serde::Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum JsonFloat {
    Finite(f64),
    NonFinite(String),
}

impl JsonFloat {
    pub(crate) fn from_f64(x: f64) -> Self {
        match non_finite_name(x) {
            None => JsonFloat::Finite(x),
            Some(name) => JsonFloat::NonFinite(name.into()),
        }
    }

    pub(crate) fn to_f64(&self) -> Result<f64, String> {
        match self {
            JsonFloat::Finite(x) => Ok(*x),
            JsonFloat::NonFinite(s) => parse_non_finite(s).ok_or_else(|| {
                format!("value {s:?} is not a number, \"nan\", \"inf\" or \"-inf\"")
            }),
        }
    }
}

fn non_finite_name(x: f64) -> Option<&'static str> {
    if x.is_nan() {
        Some("nan")
    } else if x == f64::INFINITY {
        Some("inf")
    } else if x == f64::NEG_INFINITY {
        Some("-inf")
    } else {
        None
    }
}

fn parse_non_finite(s: &str) -> Option<f64> {
    match s {
        "nan" => Some(f64::NAN),
        "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// `x` as a JSON value: a number, or its name if it is not finite.
///
/// ```
/// use ferroptim::json;
/// assert_eq!(json::number(0.5), 0.5);
/// assert_eq!(json::number(f64::NEG_INFINITY), "-inf");
/// assert!(json::as_f64(&json::number(f64::NAN)).unwrap().is_nan());
/// ```
pub fn number(x: f64) -> Value {
    match non_finite_name(x) {
        None => Value::from(x),
        Some(name) => Value::from(name),
    }
}

/// The float in `v`: a number, or `"nan"`, `"inf"`, `"-inf"`.
pub fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => parse_non_finite(s),
        v => v.as_f64(),
    }
}

/// serde for one `f64` field, written as [`number`] writes it.
pub(crate) mod float {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::JsonFloat;

    pub fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        JsonFloat::from_f64(*x).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        JsonFloat::deserialize(d)?
            .to_f64()
            .map_err(serde::de::Error::custom)
    }
}

/// `serde_json::to_value`, writing non-finite floats by name.
pub(crate) fn to_value<T: Serialize + ?Sized>(x: &T) -> serde_json::Result<Value> {
    x.serialize(ValueSerializer)
}

/// `serde_json::from_value`, reading `"nan"`, `"inf"` and `"-inf"` where a float is expected.
pub(crate) fn from_value<T: DeserializeOwned>(v: Value) -> serde_json::Result<T> {
    T::deserialize(Lenient(v))
}

/// serde_json's own value serializer, except for non-finite floats.
struct ValueSerializer;

/// The elements of a sequence, tuple or struct under construction.
struct SeqBuilder(Vec<Value>);

/// The entries of a map or struct under construction.
struct MapBuilder {
    map: Map<String, Value>,
    key: Option<String>,
}

/// A variant's payload under construction: `{"Variant": ...}`.
struct Tagged<B> {
    variant: &'static str,
    inner: B,
}

fn key_string(key: Value) -> serde_json::Result<String> {
    match key {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(ser::Error::custom(format!(
            "a map key must be a string or a number, found {other}"
        ))),
    }
}

/// The integer methods of [`ValueSerializer`]: serde_json's own values.
macro_rules! serialize_integers {
    ($($method:ident $t:ty),*) => {
        $(fn $method(self, v: $t) -> serde_json::Result<Value> {
            Ok(Value::from(v))
        })*
    };
}

impl Serializer for ValueSerializer {
    type Ok = Value;
    type Error = serde_json::Error;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = Tagged<SeqBuilder>;
    type SerializeMap = MapBuilder;
    type SerializeStruct = MapBuilder;
    type SerializeStructVariant = Tagged<MapBuilder>;

    fn serialize_f64(self, v: f64) -> serde_json::Result<Value> {
        Ok(number(v))
    }
    fn serialize_f32(self, v: f32) -> serde_json::Result<Value> {
        Ok(number(f64::from(v)))
    }
    fn serialize_bool(self, v: bool) -> serde_json::Result<Value> {
        Ok(Value::Bool(v))
    }
    serialize_integers!(serialize_i8 i8, serialize_i16 i16, serialize_i32 i32, serialize_i64 i64,
        serialize_u8 u8, serialize_u16 u16, serialize_u32 u32, serialize_u64 u64);
    fn serialize_char(self, v: char) -> serde_json::Result<Value> {
        Ok(Value::from(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> serde_json::Result<Value> {
        Ok(Value::from(v))
    }
    fn serialize_bytes(self, v: &[u8]) -> serde_json::Result<Value> {
        Ok(Value::from(v.to_vec()))
    }
    fn serialize_none(self) -> serde_json::Result<Value> {
        Ok(Value::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> serde_json::Result<Value> {
        v.serialize(self)
    }
    fn serialize_unit(self) -> serde_json::Result<Value> {
        Ok(Value::Null)
    }
    fn serialize_unit_struct(self, _: &'static str) -> serde_json::Result<Value> {
        Ok(Value::Null)
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> serde_json::Result<Value> {
        Ok(Value::from(variant))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        v: &T,
    ) -> serde_json::Result<Value> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        v: &T,
    ) -> serde_json::Result<Value> {
        Ok(Value::Object(Map::from_iter([(
            variant.to_string(),
            to_value(v)?,
        )])))
    }
    fn serialize_seq(self, len: Option<usize>) -> serde_json::Result<SeqBuilder> {
        Ok(SeqBuilder(Vec::with_capacity(len.unwrap_or(0).min(1024))))
    }
    fn serialize_tuple(self, len: usize) -> serde_json::Result<SeqBuilder> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> serde_json::Result<SeqBuilder> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> serde_json::Result<Tagged<SeqBuilder>> {
        Ok(Tagged {
            variant,
            inner: self.serialize_seq(Some(len))?,
        })
    }
    fn serialize_map(self, _: Option<usize>) -> serde_json::Result<MapBuilder> {
        Ok(MapBuilder {
            map: Map::new(),
            key: None,
        })
    }
    fn serialize_struct(self, _: &'static str, len: usize) -> serde_json::Result<MapBuilder> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> serde_json::Result<Tagged<MapBuilder>> {
        Ok(Tagged {
            variant,
            inner: self.serialize_map(Some(len))?,
        })
    }
}

impl ser::SerializeSeq for SeqBuilder {
    type Ok = Value;
    type Error = serde_json::Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> serde_json::Result<()> {
        self.0.push(to_value(v)?);
        Ok(())
    }
    fn end(self) -> serde_json::Result<Value> {
        Ok(Value::Array(self.0))
    }
}

impl ser::SerializeTuple for SeqBuilder {
    type Ok = Value;
    type Error = serde_json::Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> serde_json::Result<()> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> serde_json::Result<Value> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleStruct for SeqBuilder {
    type Ok = Value;
    type Error = serde_json::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> serde_json::Result<()> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> serde_json::Result<Value> {
        ser::SerializeSeq::end(self)
    }
}

impl ser::SerializeTupleVariant for Tagged<SeqBuilder> {
    type Ok = Value;
    type Error = serde_json::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> serde_json::Result<()> {
        ser::SerializeSeq::serialize_element(&mut self.inner, v)
    }
    fn end(self) -> serde_json::Result<Value> {
        let inner = ser::SerializeSeq::end(self.inner)?;
        Ok(Value::Object(Map::from_iter([(
            self.variant.to_string(),
            inner,
        )])))
    }
}

impl ser::SerializeMap for MapBuilder {
    type Ok = Value;
    type Error = serde_json::Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> serde_json::Result<()> {
        self.key = Some(key_string(to_value(key)?)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> serde_json::Result<()> {
        let key = self
            .key
            .take()
            .ok_or_else(|| ser::Error::custom("a map value came before its key"))?;
        self.map.insert(key, to_value(v)?);
        Ok(())
    }
    fn end(self) -> serde_json::Result<Value> {
        Ok(Value::Object(self.map))
    }
}

impl ser::SerializeStruct for MapBuilder {
    type Ok = Value;
    type Error = serde_json::Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> serde_json::Result<()> {
        self.map.insert(key.to_string(), to_value(v)?);
        Ok(())
    }
    fn end(self) -> serde_json::Result<Value> {
        Ok(Value::Object(self.map))
    }
}

impl ser::SerializeStructVariant for Tagged<MapBuilder> {
    type Ok = Value;
    type Error = serde_json::Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        v: &T,
    ) -> serde_json::Result<()> {
        ser::SerializeStruct::serialize_field(&mut self.inner, key, v)
    }
    fn end(self) -> serde_json::Result<Value> {
        Ok(Value::Object(Map::from_iter([(
            self.variant.to_string(),
            Value::Object(self.inner.map),
        )])))
    }
}

/// A JSON value read as serde_json reads it, except that `"nan"`, `"inf"`
/// and `"-inf"` are floats where a float (or anything) is asked for.
struct Lenient(Value);

impl<'de> IntoDeserializer<'de, serde_json::Error> for Lenient {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

struct LenientSeq(std::vec::IntoIter<Value>);

impl<'de> de::SeqAccess<'de> for LenientSeq {
    type Error = serde_json::Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> serde_json::Result<Option<T::Value>> {
        self.0
            .next()
            .map(|v| seed.deserialize(Lenient(v)))
            .transpose()
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct LenientMap {
    entries: serde_json::map::IntoIter,
    value: Option<Value>,
}

impl<'de> de::MapAccess<'de> for LenientMap {
    type Error = serde_json::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> serde_json::Result<Option<K::Value>> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        seed.deserialize(Key(key)).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> serde_json::Result<V::Value> {
        let value = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("a map value was asked for before its key"))?;
        seed.deserialize(Lenient(value))
    }
}

/// A map key: a string, or the integer it spells where an integer key is
/// expected (`{"30": 1}` as a map from epochs, as serde_json reads it).
struct Key(String);

macro_rules! parse_key {
    ($($method:ident => $visit:ident),*) => {
        $(fn $method<V: Visitor<'de>>(self, visitor: V) -> serde_json::Result<V::Value> {
            match self.0.parse() {
                Ok(n) => visitor.$visit(n),
                Err(_) => Err(de::Error::invalid_value(de::Unexpected::Str(&self.0), &visitor)),
            }
        })*
    };
}

impl<'de> Deserializer<'de> for Key {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> serde_json::Result<V::Value> {
        visitor.visit_string(self.0)
    }

    parse_key!(deserialize_i8 => visit_i8, deserialize_i16 => visit_i16,
        deserialize_i32 => visit_i32, deserialize_i64 => visit_i64,
        deserialize_u8 => visit_u8, deserialize_u16 => visit_u16,
        deserialize_u32 => visit_u32, deserialize_u64 => visit_u64);

    serde::forward_to_deserialize_any! {
        bool i128 u128 f32 f64 char str string bytes byte_buf option unit unit_struct
        newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

impl Lenient {
    fn float<'de, V: Visitor<'de>>(self, visitor: V) -> serde_json::Result<V::Value> {
        match &self.0 {
            Value::String(s) => match parse_non_finite(s) {
                Some(x) => visitor.visit_f64(x),
                None => self.0.deserialize_any(visitor),
            },
            _ => self.0.deserialize_f64(visitor),
        }
    }
}

impl<'de> Deserializer<'de> for Lenient {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> serde_json::Result<V::Value> {
        match self.0 {
            Value::Array(items) => visitor.visit_seq(LenientSeq(items.into_iter())),
            Value::Object(map) => visitor.visit_map(LenientMap {
                entries: map.into_iter(),
                value: None,
            }),
            Value::String(s) => match parse_non_finite(&s) {
                Some(x) => visitor.visit_f64(x),
                None => visitor.visit_string(s),
            },
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> serde_json::Result<V::Value> {
        self.float(visitor)
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> serde_json::Result<V::Value> {
        self.float(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> serde_json::Result<V::Value> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            v => visitor.visit_some(Lenient(v)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> serde_json::Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> serde_json::Result<V::Value> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> serde_json::Result<V::Value> {
        self.0.deserialize_str(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> serde_json::Result<V::Value> {
        self.0.deserialize_string(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> serde_json::Result<V::Value> {
        self.0.deserialize_identifier(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> serde_json::Result<V::Value> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 char bytes byte_buf unit unit_struct seq tuple
        tuple_struct map struct
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, Deserialize)]
    struct Config {
        lr: f64,
        betas: (f64, f64),
        eps: Option<f64>,
        name: Option<String>,
        steps: usize,
        flag: bool,
    }

    fn same(a: f64, b: f64) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    #[test]
    fn non_finite_floats_round_trip_and_strings_stay_strings() {
        let c = Config {
            lr: f64::NAN,
            betas: (f64::INFINITY, f64::NEG_INFINITY),
            eps: Some(-0.0),
            name: Some("nan".into()),
            steps: 3,
            flag: true,
        };
        let v = to_value(&c).unwrap();
        assert_eq!(v["lr"], "nan");
        assert_eq!(v["betas"][1], "-inf");
        assert_eq!(v["name"], "nan");
        let back: Config = from_value(v.clone()).unwrap();
        assert!(same(back.lr, c.lr) && same(back.betas.0, c.betas.0));
        assert!(same(back.betas.1, c.betas.1) && same(back.eps.unwrap(), -0.0));
        assert_eq!(back.name.as_deref(), Some("nan"));
        assert_eq!((back.steps, back.flag), (3, true));
        // Through text too.
        let text = serde_json::to_string(&v).unwrap();
        let back: Config = from_value(serde_json::from_str(&text).unwrap()).unwrap();
        assert!(back.lr.is_nan());
    }

    #[test]
    fn integer_keys_read_back_as_integers() {
        let counts = std::collections::BTreeMap::from([(30i64, 1u64), (-2, 2)]);
        let v = to_value(&counts).unwrap();
        assert_eq!(v, serde_json::json!({"30": 1, "-2": 2}));
        let back: std::collections::BTreeMap<i64, u64> = from_value(v).unwrap();
        assert_eq!(back, counts);
        let bad = from_value::<std::collections::BTreeMap<i64, u64>>(serde_json::json!({"x": 1}));
        assert!(bad.is_err());
    }

    #[test]
    fn a_string_where_a_float_belongs_is_still_an_error() {
        let v = serde_json::json!({"lr": "fast", "betas": [0.9, 0.99], "eps": null,
                                   "name": null, "steps": 1, "flag": false});
        let err = from_value::<Config>(v).unwrap_err().to_string();
        assert!(err.contains("fast"), "{err}");
        assert!(as_f64(&Value::from("inf")).unwrap().is_infinite());
        assert_eq!(as_f64(&number(0.5)), Some(0.5));
        assert!(as_f64(&Value::from("x")).is_none());
    }
}
