//! [`EngineRuntime`]: the [`ContainerRuntime`] of any engine, on that engine's [`EngineCalls`].

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kat_core::runtime::{
    CancellationToken, Capabilities, ContainerRuntime, ContainerSpec, EntrypointBinary,
    EntrypointMount, ManagedContainer, Outcome,
};
use kat_core::task::TaskId;

use crate::{EngineCalls, StopSignal, prepare_entrypoint, reap_orphans, run_container};

/// A [`ContainerRuntime`] on the engine whose calls are `E`: [`run_container`], [`prepare_entrypoint`]
/// (serialized within the process) and [`reap_orphans`], with the errors mapped onto [`kat_core::Error`].
/// Cheap to clone when `E` is; clones share the serialization of `prepare_entrypoint`.
///
/// The runtime crates wrap it in a type of their own that adds connecting and the engine's client
/// (`kat_runtime_docker::DockerRuntime`, `kat_runtime_podman::PodmanRuntime`), and implement
/// [`ContainerRuntime`] for that type with [`delegate_container_runtime!`](crate::delegate_container_runtime).
///
/// ```no_run
/// # use kat_runtime_engine::{EngineCalls, EngineRuntime};
/// # async fn demo<E: EngineCalls>(calls: E) -> kat_core::Result<()>
/// # where kat_core::Error: From<E::Error> {
/// use kat_core::runtime::{CancellationToken, ContainerRuntime, ContainerSpec};
/// let rt = EngineRuntime::new(calls);
/// let spec = ContainerSpec::new("hello", "kat-busybox:latest", ["echo", "hello"]);
/// let outcome = rt.run(spec, CancellationToken::new()).await?;
/// assert_eq!(outcome.stdout_tail, b"hello\n");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct EngineRuntime<E> {
    engine: E,
    /// Serializes `prepare_entrypoint` calls of this process.
    prepare_lock: Arc<tokio::sync::Mutex<()>>,
}

impl<E: EngineCalls> EngineRuntime<E> {
    /// The runtime on `engine`'s calls.
    ///
    /// ```no_run
    /// # fn demo<E: kat_runtime_engine::EngineCalls>(calls: E) {
    /// let rt = kat_runtime_engine::EngineRuntime::new(calls);
    /// # }
    /// ```
    pub fn new(engine: E) -> Self {
        EngineRuntime {
            engine,
            prepare_lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The engine's calls.
    ///
    /// ```no_run
    /// # fn demo<E: kat_runtime_engine::EngineCalls>(rt: kat_runtime_engine::EngineRuntime<E>) {
    /// println!("{:?}", rt.engine());
    /// # }
    /// ```
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// The engine's calls, to change a setting of this runtime (clones made before keep theirs).
    ///
    /// ```no_run
    /// # fn demo<E: kat_runtime_engine::EngineCalls>(mut rt: kat_runtime_engine::EngineRuntime<E>) {
    /// let calls = rt.engine_mut();
    /// # }
    /// ```
    pub fn engine_mut(&mut self) -> &mut E {
        &mut self.engine
    }
}

#[async_trait]
impl<E> ContainerRuntime for EngineRuntime<E>
where
    E: EngineCalls,
    kat_core::Error: From<E::Error>,
{
    async fn capabilities(&self) -> kat_core::Result<Capabilities> {
        Ok(self.engine.capabilities().await?)
    }

    async fn prepare_entrypoint(
        &self,
        binary: &EntrypointBinary,
        volume: &str,
        deployment: &str,
    ) -> kat_core::Result<EntrypointMount> {
        let _serial = self.prepare_lock.lock().await;
        Ok(prepare_entrypoint(&self.engine, binary, volume, deployment).await?)
    }

    async fn ensure_image(&self, image: &str, timeout: Duration) -> kat_core::Result<()> {
        // The engine cancels by dropping this future; the signal is there for the pull's bound.
        let stop = StopSignal::new(CancellationToken::new(), CancellationToken::new());
        Ok(self.engine.ensure_image(image, timeout, &stop).await?)
    }

    async fn run(
        &self,
        spec: ContainerSpec,
        cancel: CancellationToken,
    ) -> kat_core::Result<Outcome> {
        Ok(run_container(self.engine.clone(), spec, cancel).await?)
    }

    async fn list_managed(&self) -> kat_core::Result<Vec<ManagedContainer>> {
        Ok(self.engine.list_managed().await?)
    }

    async fn reap_orphans(
        &self,
        deployment: &str,
        live: &HashSet<TaskId>,
    ) -> kat_core::Result<Vec<String>> {
        Ok(reap_orphans(&self.engine, deployment, live).await?)
    }
}

/// Implement [`ContainerRuntime`] for a runtime crate's own type by handing every call to its
/// [`EngineRuntime`] field (`$field`, a field name or tuple index).
///
/// ```
/// use kat_runtime_engine::EngineRuntime;
/// # #[derive(Debug, Clone)] struct MyCalls;
/// # #[derive(Debug, thiserror::Error)] #[error("x")] enum MyError { S(#[from] kat_runtime_engine::SpecError), L(#[from] kat_runtime_engine::LoadError), T(#[from] kat_runtime_engine::TaskFailed) }
/// # impl kat_runtime_engine::EngineError for MyError { fn cancelled() -> Self { no_engine() } fn unexpected(_: &'static str, _: String) -> Self { no_engine() } }
/// # fn no_engine() -> MyError { MyError::T(kat_runtime_engine::TaskFailed("no engine behind this sketch".into())) }
/// # impl From<MyError> for kat_core::Error { fn from(_: MyError) -> Self { kat_core::Error::Cancelled } }
/// # #[async_trait::async_trait]
/// # impl kat_runtime_engine::EngineCalls for MyCalls {
/// #     type Error = MyError;
/// #     async fn capabilities(&self) -> Result<kat_core::runtime::Capabilities, MyError> { Err(no_engine()) }
/// #     async fn create(&self, _: &str, _: &kat_core::runtime::ContainerSpec, _: &kat_runtime_engine::StopSignal) -> Result<String, MyError> { Err(no_engine()) }
/// #     async fn attach(&self, _: &str) -> Result<kat_runtime_engine::OutputStream, MyError> { Err(no_engine()) }
/// #     async fn start(&self, _: &str) -> Result<(), MyError> { Err(no_engine()) }
/// #     async fn wait(&self, _: &str) -> Result<Option<i64>, MyError> { Err(no_engine()) }
/// #     async fn kill(&self, _: &str) {}
/// #     async fn remove(&self, _: &str) -> Result<(), MyError> { Err(no_engine()) }
/// #     async fn list_managed(&self) -> Result<Vec<kat_core::runtime::ManagedContainer>, MyError> { Err(no_engine()) }
/// #     async fn ensure_volume(&self, _: &str) -> Result<(), MyError> { Err(no_engine()) }
/// #     async fn create_helper(&self, _: &str, _: &str) -> Result<String, MyError> { Err(no_engine()) }
/// #     async fn list_helpers(&self) -> Result<Vec<kat_core::runtime::ManagedContainer>, MyError> { Err(no_engine()) }
/// #     async fn stat(&self, _: &str, _: &str) -> Result<Option<(u64, u32)>, MyError> { Err(no_engine()) }
/// #     async fn read_archive(&self, _: &str, _: &str, _: usize) -> Result<Option<Vec<u8>>, MyError> { Err(no_engine()) }
/// #     async fn upload(&self, _: &str, _: &str, _: Vec<u8>) -> Result<(), MyError> { Err(no_engine()) }
/// # }
///
/// /// A runtime on my engine, with whatever connecting and settings it needs.
/// #[derive(Debug, Clone)]
/// pub struct MyRuntime {
///     inner: EngineRuntime<MyCalls>,
/// }
///
/// kat_runtime_engine::delegate_container_runtime!(MyRuntime, inner);
///
/// fn takes(_: std::sync::Arc<dyn kat_core::runtime::ContainerRuntime>) {}
/// takes(std::sync::Arc::new(MyRuntime { inner: EngineRuntime::new(MyCalls) }));
/// ```
#[macro_export]
macro_rules! delegate_container_runtime {
    ($ty:ty, $field:tt) => {
        #[$crate::__private::async_trait]
        impl $crate::__private::ContainerRuntime for $ty {
            async fn capabilities(
                &self,
            ) -> $crate::__private::kat_core::Result<
                $crate::__private::kat_core::runtime::Capabilities,
            > {
                $crate::__private::ContainerRuntime::capabilities(&self.$field).await
            }

            async fn prepare_entrypoint(
                &self,
                binary: &$crate::__private::kat_core::runtime::EntrypointBinary,
                volume: &str,
                deployment: &str,
            ) -> $crate::__private::kat_core::Result<
                $crate::__private::kat_core::runtime::EntrypointMount,
            > {
                $crate::__private::ContainerRuntime::prepare_entrypoint(
                    &self.$field,
                    binary,
                    volume,
                    deployment,
                )
                .await
            }

            async fn ensure_image(
                &self,
                image: &str,
                timeout: ::std::time::Duration,
            ) -> $crate::__private::kat_core::Result<()> {
                $crate::__private::ContainerRuntime::ensure_image(&self.$field, image, timeout)
                    .await
            }

            async fn run(
                &self,
                spec: $crate::__private::kat_core::runtime::ContainerSpec,
                cancel: $crate::__private::kat_core::runtime::CancellationToken,
            ) -> $crate::__private::kat_core::Result<$crate::__private::kat_core::runtime::Outcome>
            {
                $crate::__private::ContainerRuntime::run(&self.$field, spec, cancel).await
            }

            async fn list_managed(
                &self,
            ) -> $crate::__private::kat_core::Result<
                ::std::vec::Vec<$crate::__private::kat_core::runtime::ManagedContainer>,
            > {
                $crate::__private::ContainerRuntime::list_managed(&self.$field).await
            }

            async fn reap_orphans(
                &self,
                deployment: &str,
                live: &::std::collections::HashSet<$crate::__private::kat_core::task::TaskId>,
            ) -> $crate::__private::kat_core::Result<::std::vec::Vec<::std::string::String>> {
                $crate::__private::ContainerRuntime::reap_orphans(&self.$field, deployment, live)
                    .await
            }
        }
    };
}
