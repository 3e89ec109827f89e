//! The golden Rust output of `kafkasocks-build` for `codegen/tests/protos/every/v1/every.proto`
//! (with `grpc(true)` and `btree_map(["."])`), checked in under `src/generated/` and compiled
//! here, so a change of the generator that breaks the generated code fails the build.
//!
//! `kafkasocks-build`'s `golden` test regenerates these files and fails on any difference;
//! `KAFKASOCKS_BLESS=1 cargo test -p kafkasocks-build --test golden` rewrites them.
//!
//! Modules follow the protobuf packages (prost refers across packages with `super::`).

/// `package every.v1;`
pub mod every {
    /// `package every.v1;`
    #[allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub, missing_debug_implementations)]
    pub mod v1 {
        include!("generated/every.v1.rs");
    }
}

/// `package legacy.v1;`
pub mod legacy {
    /// `package legacy.v1;`
    #[allow(missing_docs, clippy::all, clippy::pedantic, unreachable_pub, missing_debug_implementations)]
    pub mod v1 {
        include!("generated/legacy.v1.rs");
    }
}
