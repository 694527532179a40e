//! The `ContainerRuntime` conformance suite (filled in by the Docker runtime work).
