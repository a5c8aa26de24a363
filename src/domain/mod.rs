//! Newtypes that carry their checks: a value of these types has been parsed,
//! so code that receives one never re-validates it (STYLE.md, "parse, don't validate").

mod email;
mod slug;
mod token;
mod zone;

pub use email::{EmailAddress, EmailError};
pub use slug::{Slug, SlugError};
pub use token::{Token, TokenError, SIGNED_BYTES, SIGNED_LEN, TOKEN_LEN};
pub use zone::{listed as listed_time_zones, TimeZone, TimeZoneError};
