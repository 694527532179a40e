//! End-to-end tests: the real Docker engine, sled and HTTP over loopback, built only from local images
//! (kat-busybox, kat-manual for the manual's examples, the static entrypoint). Each test runs its own
//! deployment. In CI a missing engine, image or entrypoint fails these tests; elsewhere they are skipped
//! with a message.

mod harness;

mod chain;
mod lifecycle;
mod manual;
mod modes;
mod orgs;
mod original;
mod privileges;
mod rights;
