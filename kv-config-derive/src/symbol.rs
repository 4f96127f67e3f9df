//! Attribute names.

use std::fmt;
use syn::{Ident, Path};

#[derive(Copy, Clone)]
pub struct Symbol(pub &'static str);

pub const KV: Symbol = Symbol("kv");
pub const SERDE: Symbol = Symbol("serde");
pub const RENAME: Symbol = Symbol("rename");
pub const RENAME_ALL: Symbol = Symbol("rename_all");
pub const DEFAULT: Symbol = Symbol("default");
pub const NESTED: Symbol = Symbol("nested");
pub const SECRET: Symbol = Symbol("secret");
pub const SKIP: Symbol = Symbol("skip");
pub const VALIDATE: Symbol = Symbol("validate");
pub const VALIDATE_EACH: Symbol = Symbol("validate_each");
pub const JSON: Symbol = Symbol("json");

impl PartialEq<Symbol> for Ident {
    fn eq(&self, word: &Symbol) -> bool {
        self == word.0
    }
}

impl PartialEq<Symbol> for &Ident {
    fn eq(&self, word: &Symbol) -> bool {
        *self == word.0
    }
}

impl PartialEq<Symbol> for Path {
    fn eq(&self, word: &Symbol) -> bool {
        self.is_ident(word.0)
    }
}

impl PartialEq<Symbol> for &Path {
    fn eq(&self, word: &Symbol) -> bool {
        self.is_ident(word.0)
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}
