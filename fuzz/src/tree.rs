//! A postcard message as a tree of its fields, for structure-aware mutation.
//!
//! postcard is not self-describing, but serializing a known value walks its structure:
//! [`to_tree`] records that walk, [`Node::encode`] writes a tree back in postcard's
//! format. For an unmodified tree, `encode(to_tree(m)) == postcard::to_stdvec(m)` (checked
//! by the targets on every seed). A mutated tree encodes to bytes that keep the message's
//! layout except where the mutation went: a big integer of a ZK proof with other digits,
//! a vector one element short, another enum variant, and so on.

use serde::ser::{self, Serialize};

/// One serialized value, with enough of its encoding to write it back.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// Fixed-width bytes: `u8`, `i8`, `bool`, floats, an `Option` tag.
    Raw(Vec<u8>),
    /// An unsigned varint (`u16` to `u128`, lengths are separate).
    Uint(u128),
    /// A zigzag varint (`i16` to `i128`).
    Sint(i128),
    /// A length-prefixed byte string (`bytes`, `str`, `char`).
    Bytes(Vec<u8>),
    /// A length-prefixed sequence.
    Seq(Vec<Node>),
    /// A length-prefixed map: keys and values alternate.
    Map(Vec<Node>),
    /// Items without a prefix: struct, tuple, newtype, `Some`'s value.
    Group(Vec<Node>),
    /// An enum variant: its index as a varint, then its content.
    Variant(u32, Box<Node>),
}

fn varint(out: &mut Vec<u8>, mut v: u128) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

impl Node {
    /// postcard's encoding of the tree.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Node::Raw(b) => out.extend_from_slice(b),
            Node::Uint(v) => varint(out, *v),
            Node::Sint(v) => varint(out, ((v << 1) ^ (v >> 127)) as u128),
            Node::Bytes(b) => {
                varint(out, b.len() as u128);
                out.extend_from_slice(b);
            }
            Node::Seq(items) => {
                varint(out, items.len() as u128);
                items.iter().for_each(|n| n.encode_into(out));
            }
            Node::Map(items) => {
                varint(out, (items.len() / 2) as u128);
                items.iter().for_each(|n| n.encode_into(out));
            }
            Node::Group(items) => items.iter().for_each(|n| n.encode_into(out)),
            Node::Variant(i, content) => {
                varint(out, u128::from(*i));
                content.encode_into(out);
            }
        }
    }

    /// Number of nodes in the tree (itself included).
    pub fn count(&self) -> usize {
        1 + self.children().iter().map(Node::count).sum::<usize>()
    }

    fn children(&self) -> &[Node] {
        match self {
            Node::Seq(c) | Node::Map(c) | Node::Group(c) => c,
            Node::Variant(_, c) => std::slice::from_ref(&**c),
            _ => &[],
        }
    }

    fn children_mut(&mut self) -> &mut [Node] {
        match self {
            Node::Seq(c) | Node::Map(c) | Node::Group(c) => c,
            Node::Variant(_, c) => std::slice::from_mut(&mut **c),
            _ => &mut [],
        }
    }

    /// The `i`-th node in pre-order (`i < count()`).
    pub fn nth(&self, mut i: usize) -> Option<&Node> {
        if i == 0 {
            return Some(self);
        }
        i -= 1;
        for c in self.children() {
            let n = c.count();
            if i < n {
                return c.nth(i);
            }
            i -= n;
        }
        None
    }

    /// The `i`-th node in pre-order, mutably.
    pub fn nth_mut(&mut self, mut i: usize) -> Option<&mut Node> {
        if i == 0 {
            return Some(self);
        }
        i -= 1;
        for c in self.children_mut() {
            let n = c.count();
            if i < n {
                return c.nth_mut(i);
            }
            i -= n;
        }
        None
    }
}

/// Records how `value` serializes.
pub fn to_tree<T: Serialize + ?Sized>(value: &T) -> Result<Node, Error> {
    value.serialize(TreeSerializer)
}

/// A serialization the tree cannot hold (a sequence of unknown length: postcard refuses
/// it too).
#[derive(Debug)]
pub struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

struct TreeSerializer;

/// Collects the items of a compound value.
pub struct Compound {
    items: Vec<Node>,
    wrap: fn(Vec<Node>) -> Node,
}

fn seq(items: Vec<Node>) -> Node {
    Node::Seq(items)
}
fn map(items: Vec<Node>) -> Node {
    Node::Map(items)
}
fn group(items: Vec<Node>) -> Node {
    Node::Group(items)
}

/// Collects the items of an enum variant's content.
pub struct VariantCompound {
    index: u32,
    items: Vec<Node>,
}

impl ser::Serializer for TreeSerializer {
    type Ok = Node;
    type Error = Error;
    type SerializeSeq = Compound;
    type SerializeTuple = Compound;
    type SerializeTupleStruct = Compound;
    type SerializeTupleVariant = VariantCompound;
    type SerializeMap = Compound;
    type SerializeStruct = Compound;
    type SerializeStructVariant = VariantCompound;

    fn is_human_readable(&self) -> bool {
        false // as postcard: types pick their compact binary form
    }
    fn serialize_bool(self, v: bool) -> Result<Node, Error> {
        Ok(Node::Raw(vec![u8::from(v)]))
    }
    fn serialize_i8(self, v: i8) -> Result<Node, Error> {
        Ok(Node::Raw(v.to_le_bytes().to_vec()))
    }
    fn serialize_i16(self, v: i16) -> Result<Node, Error> {
        Ok(Node::Sint(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<Node, Error> {
        Ok(Node::Sint(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<Node, Error> {
        Ok(Node::Sint(v.into()))
    }
    fn serialize_i128(self, v: i128) -> Result<Node, Error> {
        Ok(Node::Sint(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Node, Error> {
        Ok(Node::Raw(vec![v]))
    }
    fn serialize_u16(self, v: u16) -> Result<Node, Error> {
        Ok(Node::Uint(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<Node, Error> {
        Ok(Node::Uint(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<Node, Error> {
        Ok(Node::Uint(v.into()))
    }
    fn serialize_u128(self, v: u128) -> Result<Node, Error> {
        Ok(Node::Uint(v))
    }
    fn serialize_f32(self, v: f32) -> Result<Node, Error> {
        Ok(Node::Raw(v.to_le_bytes().to_vec()))
    }
    fn serialize_f64(self, v: f64) -> Result<Node, Error> {
        Ok(Node::Raw(v.to_le_bytes().to_vec()))
    }
    fn serialize_char(self, v: char) -> Result<Node, Error> {
        Ok(Node::Bytes(v.to_string().into_bytes()))
    }
    fn serialize_str(self, v: &str) -> Result<Node, Error> {
        Ok(Node::Bytes(v.as_bytes().to_vec()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Node, Error> {
        Ok(Node::Bytes(v.to_vec()))
    }
    fn serialize_none(self) -> Result<Node, Error> {
        Ok(Node::Raw(vec![0]))
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Node, Error> {
        Ok(Node::Group(vec![Node::Raw(vec![1]), to_tree(value)?]))
    }
    fn serialize_unit(self) -> Result<Node, Error> {
        Ok(Node::Group(vec![]))
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<Node, Error> {
        Ok(Node::Group(vec![]))
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        i: u32,
        _: &'static str,
    ) -> Result<Node, Error> {
        Ok(Node::Variant(i, Box::new(Node::Group(vec![]))))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<Node, Error> {
        Ok(Node::Group(vec![to_tree(value)?]))
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        i: u32,
        _: &'static str,
        value: &T,
    ) -> Result<Node, Error> {
        Ok(Node::Variant(i, Box::new(to_tree(value)?)))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Compound, Error> {
        len.ok_or_else(|| Error("sequence of unknown length".into()))?;
        Ok(Compound {
            items: Vec::new(),
            wrap: seq,
        })
    }
    fn serialize_tuple(self, _: usize) -> Result<Compound, Error> {
        Ok(Compound {
            items: Vec::new(),
            wrap: group,
        })
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Compound, Error> {
        self.serialize_tuple(0)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        _: usize,
    ) -> Result<VariantCompound, Error> {
        Ok(VariantCompound {
            index,
            items: Vec::new(),
        })
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Compound, Error> {
        len.ok_or_else(|| Error("map of unknown length".into()))?;
        Ok(Compound {
            items: Vec::new(),
            wrap: map,
        })
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Compound, Error> {
        self.serialize_tuple(0)
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantCompound, Error> {
        self.serialize_tuple_variant(name, index, variant, len)
    }
    fn collect_str<T: std::fmt::Display + ?Sized>(self, value: &T) -> Result<Node, Error> {
        self.serialize_str(&value.to_string())
    }
}

impl Compound {
    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.items.push(to_tree(value)?);
        Ok(())
    }
    fn finish(self) -> Node {
        (self.wrap)(self.items)
    }
}

impl ser::SerializeSeq for Compound {
    type Ok = Node;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.push(v)
    }
    fn end(self) -> Result<Node, Error> {
        Ok(self.finish())
    }
}

impl ser::SerializeTuple for Compound {
    type Ok = Node;
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.push(v)
    }
    fn end(self) -> Result<Node, Error> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleStruct for Compound {
    type Ok = Node;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.push(v)
    }
    fn end(self) -> Result<Node, Error> {
        Ok(self.finish())
    }
}

impl ser::SerializeMap for Compound {
    type Ok = Node;
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), Error> {
        self.push(k)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.push(v)
    }
    fn end(self) -> Result<Node, Error> {
        Ok(self.finish())
    }
}

impl ser::SerializeStruct for Compound {
    type Ok = Node;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        self.push(v)
    }
    fn end(self) -> Result<Node, Error> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleVariant for VariantCompound {
    type Ok = Node;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Error> {
        self.items.push(to_tree(v)?);
        Ok(())
    }
    fn end(self) -> Result<Node, Error> {
        Ok(Node::Variant(self.index, Box::new(Node::Group(self.items))))
    }
}

impl ser::SerializeStructVariant for VariantCompound {
    type Ok = Node;
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        _: &'static str,
        v: &T,
    ) -> Result<(), Error> {
        self.items.push(to_tree(v)?);
        Ok(())
    }
    fn end(self) -> Result<Node, Error> {
        Ok(Node::Variant(self.index, Box::new(Node::Group(self.items))))
    }
}
