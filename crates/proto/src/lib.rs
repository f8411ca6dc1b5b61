//! Generated code for the platform's gRPC contract, package `automation.v1`.
//!
//! The sources are `proto/automation/v1/*.proto` at the top of the workspace;
//! `build.rs` compiles them with protox, so no `protoc` is needed. The module
//! tree mirrors the proto packages: `automation::v1`, re-exported as [`v1`].

/// The `automation` proto package.
pub mod automation {
    /// The `automation.v1` proto package.
    #[allow(clippy::all, missing_docs)]
    pub mod v1 {
        tonic::include_proto!("automation.v1");
    }
}

pub use automation::v1;

/// The encoded `FileDescriptorSet` of every `automation.v1` file, for gRPC
/// server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/automation_descriptor.bin"));
