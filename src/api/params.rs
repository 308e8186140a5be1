//! Query parameter types whose parse errors tell the client exactly what is accepted.

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef};
use poem_openapi::types::{ParseError, ParseFromParameter, ParseResult, Type};

/// Implements poem-openapi's `Type` for `$ty`: a required value documented inline by the
/// `MetaSchema` that `$schema` (a `fn() -> MetaSchema`) builds, for the parameters and forms
/// whose parsing is their own (so that a wrong value is a 422 naming it, not poem's 400).
macro_rules! inline_type {
    ($ty:ty, $name:literal, $schema:expr) => {
        impl poem_openapi::types::Type for $ty {
            const IS_REQUIRED: bool = true;
            type RawValueType = Self;
            type RawElementValueType = Self;

            fn name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }

            fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
                let schema: fn() -> poem_openapi::registry::MetaSchema = $schema;
                poem_openapi::registry::MetaSchemaRef::Inline(Box::new(schema()))
            }

            fn as_raw_value(&self) -> Option<&Self> {
                Some(self)
            }

            fn raw_element_iter<'a>(&'a self) -> Box<dyn Iterator<Item = &'a Self> + 'a> {
                Box::new(std::iter::once(self))
            }
        }
    };
}
pub(crate) use inline_type;

/// A page size (`limit`) from 1 to `MAX`, `DEFAULT` when absent.
///
/// Hand-implemented rather than `u32` with validators: their errors read
/// "verification failed. maximum(1000, exclusive: false)"; this one says what to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize<const DEFAULT: u32, const MAX: u32>(u32);

impl<const DEFAULT: u32, const MAX: u32> PageSize<DEFAULT, MAX> {
    /// The size asked for, or `DEFAULT` when the parameter was absent.
    pub fn or_default(param: Option<Self>) -> u32 {
        param.map_or(DEFAULT, |size| size.0)
    }

    /// The size.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl<const DEFAULT: u32, const MAX: u32> Type for PageSize<DEFAULT, MAX> {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        format!("page_size_{MAX}").into()
    }

    fn schema_ref() -> MetaSchemaRef {
        let mut schema = MetaSchema::new_with_format("integer", "uint32");
        schema.minimum = Some(1.0);
        schema.maximum = Some(f64::from(MAX));
        schema.default = Some(DEFAULT.into());
        MetaSchemaRef::Inline(Box::new(schema))
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl<const DEFAULT: u32, const MAX: u32> ParseFromParameter for PageSize<DEFAULT, MAX> {
    fn parse_from_parameter(value: &str) -> ParseResult<Self> {
        match value.parse::<u32>() {
            Ok(n) if (1..=MAX).contains(&n) => Ok(Self(n)),
            _ => Err(ParseError::custom(format!(
                "must be a whole number from 1 to {MAX} (default {DEFAULT}), got {value:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Limit = PageSize<100, 1000>;

    #[test]
    fn accepts_1_to_max() {
        assert_eq!(Limit::parse_from_parameter("1").unwrap().get(), 1);
        assert_eq!(Limit::parse_from_parameter("1000").unwrap().get(), 1000);
        assert_eq!(Limit::or_default(None), 100);
    }

    #[test]
    fn refuses_everything_else_saying_what_is_accepted() {
        for bad in ["0", "1001", "-1", "abc", "", "1.5", " 5", "99999999999"] {
            let err = Limit::parse_from_parameter(bad).unwrap_err();
            assert!(err.message().contains("from 1 to 1000"), "{bad}");
        }
    }
}
