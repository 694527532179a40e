//! End-to-end tests: a real container engine, sled and HTTP over loopback, built only from local images
//! (kat-busybox, kat-manual for the manual's examples, the images shaped like OpenKAT's, the static
//! entrypoint). Each test runs its own deployment. The engine is Docker, or Podman with
//! `KAT_E2E_RUNTIME=podman` (`scripts/test.sh` runs the suite on both); tests reach it only through the
//! harness, so each runs unchanged on either. In CI a missing engine, image or entrypoint fails these
//! tests; elsewhere they are skipped with a message.

mod harness;

mod chain;
mod discovery;
mod lifecycle;
mod manual;
mod modes;
mod orgs;
mod original;
mod privileges;
mod rights;
