//! kat-entrypoint: placeholder until the entrypoint lands.
fn main() {}
