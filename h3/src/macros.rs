//! The one macro that turns a table of wire values into a newtype with named constants.

/// Declares a `Copy` newtype over [`VarInt`]($crate::proto::VarInt) whose named values are
/// associated constants, whose `Debug` prints the name (or `Type(0x..)` for other values), and
/// which encodes as a single varint through [`Codec`]($crate::proto::Codec).
///
/// The `grease` line gives the reserved pattern (`0x1f * N + 0x21` for HTTP/3's registries,
/// `0x29 * N + 0x17` for capsule types). Every value in a table is a hex literal that fits in a
/// `u32`, so the constants are built without a fallible conversion. Values outside the table (unknown or GREASE) are still values:
/// decoding never fails because a number is not in the table.
macro_rules! wire_values {
    (
        $(#[$meta:meta])*
        pub struct $ty:ident;
        grease = $mul:literal * N + $add:literal;
        $(
            $(#[$doc:meta])*
            $name:ident = $val:literal;
        )*
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty($crate::proto::VarInt);

        impl $ty {
            $(
                $(#[$doc])*
                pub const $name: Self = Self($crate::proto::VarInt::from_u32($val));
            )*

            /// Wraps a value read from or destined for the wire.
            pub const fn from_varint(value: $crate::proto::VarInt) -> Self {
                Self(value)
            }

            /// Wraps a small value.
            pub const fn from_u32(value: u32) -> Self {
                Self($crate::proto::VarInt::from_u32(value))
            }

            /// The value as it goes on the wire.
            pub const fn to_varint(self) -> $crate::proto::VarInt {
                self.0
            }

            /// The value as a plain integer.
            pub const fn into_inner(self) -> u64 {
                self.0.into_inner()
            }

            /// The name of this value when the table knows it.
            pub const fn name(self) -> Option<&'static str> {
                match self.0.into_inner() {
                    $( $val => Some(stringify!($name)), )*
                    _ => None,
                }
            }

            /// Whether this is one of the reserved values (the table's `grease` line) that peers
            /// send to exercise the rule that unknown values are ignored.
            pub const fn is_grease(self) -> bool {
                $crate::proto::is_reserved($mul, $add, self.0.into_inner())
            }

            /// The reserved (GREASE) value number `n`, wrapped into the varint range.
            pub fn grease(n: u64) -> Self {
                Self($crate::proto::reserved_value($mul, $add, n))
            }
        }

        impl core::fmt::Debug for $ty {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.name() {
                    Some(name) => f.write_str(name),
                    None => write!(f, concat!(stringify!($ty), "({:#x})"), self.0.into_inner()),
                }
            }
        }

        impl core::fmt::Display for $ty {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                core::fmt::Debug::fmt(self, f)
            }
        }

        impl From<$crate::proto::VarInt> for $ty {
            fn from(value: $crate::proto::VarInt) -> Self {
                Self(value)
            }
        }

        impl From<$ty> for $crate::proto::VarInt {
            fn from(value: $ty) -> Self {
                value.0
            }
        }

        impl From<$ty> for u64 {
            fn from(value: $ty) -> Self {
                value.0.into_inner()
            }
        }

        impl $crate::proto::Codec for $ty {
            fn decode<B: bytes::Buf>(buf: &mut B) -> Result<Self, $crate::proto::UnexpectedEnd> {
                $crate::proto::VarInt::decode(buf).map(Self)
            }

            fn encode<B: bytes::BufMut>(&self, buf: &mut B) {
                self.0.encode(buf);
            }
        }
    };
}

/// Chainable setters for a config's fields, inside an `impl` block: each
/// `with_name => name: Type` becomes `pub fn with_name(self, value: Type) -> Self`.
macro_rules! with_setters {
    ($($setter:ident => $field:ident: $ty:ty),* $(,)?) => {
        $(
            #[doc = concat!("Sets [`Self::", stringify!($field), "`].")]
            #[must_use]
            pub fn $setter(mut self, value: $ty) -> Self {
                self.$field = value;
                self
            }
        )*
    };
}
