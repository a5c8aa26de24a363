//! The content store: case studies read from Markdown files (and, in the
//! daemon, upstream feeds) into an immutable [`Catalog`] snapshot.

pub mod frontmatter;
pub mod markdown;
pub mod model;
pub mod sections;
pub mod store;
pub mod text;
pub mod upstream;
pub mod watcher;

pub use model::{CaseStudy, Origin, Parsed, Problem};
pub use store::{Catalog, DirectoryStore};
