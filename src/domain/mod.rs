//! Newtypes that carry their checks: a value of these types has been parsed,
//! so code that receives one never re-validates it (STYLE.md, "parse, don't validate").

mod slug;

pub use slug::{Slug, SlugError};
