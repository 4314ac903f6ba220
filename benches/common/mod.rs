//! Helpers shared by the benchmark binaries.
#![allow(dead_code)]

/// The value after `name` on the command line, parsed, or `default`.
pub fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The MNIST directory: $DBN_MNIST_DIR, or the workplace's shared copy.
pub fn mnist_dir() -> std::path::PathBuf {
    std::env::var("DBN_MNIST_DIR")
        .unwrap_or_else(|_| "../shared/data/mnist".into())
        .into()
}
