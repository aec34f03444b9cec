//! Where models run: `--device cpu | cuda | cuda:N`, opened as a candle device.
//!
//! Callers never branch on the `cuda` cargo feature: without it, candle's
//! stand-in CUDA device refuses to open, and we turn that into a clear error.
//! [`PerDevice`] keeps what a model uploads to a device, once per device.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};

/// The device a user asked for on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    Cuda(usize),
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("`{0}` is not a device; expected `cpu`, `cuda` or `cuda:N`")]
    Unknown(String),
    #[error("cannot use `{spec}`: lakescore was built without CUDA support; rebuild with `--features cuda`")]
    NotCompiledWithCuda { spec: DeviceSpec },
    #[error("cannot open CUDA device `{spec}`")]
    Unavailable {
        spec: DeviceSpec,
        #[source]
        source: Box<candle_core::Error>,
    },
}

impl DeviceError {
    /// The request cannot be met by any machine as built (a usage error),
    /// rather than by this machine now.
    pub fn is_usage(&self) -> bool {
        match self {
            DeviceError::Unknown(_) | DeviceError::NotCompiledWithCuda { .. } => true,
            DeviceError::Unavailable { .. } => false,
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => text
                .strip_prefix("cuda:")
                .and_then(|index| index.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| DeviceError::Unknown(text.to_string())),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

impl DeviceSpec {
    /// Opens the device; models upload their weights to it once, at load.
    pub fn open(self) -> Result<candle_core::Device, DeviceError> {
        match self {
            DeviceSpec::Cpu => Ok(candle_core::Device::Cpu),
            DeviceSpec::Cuda(index) => candle_core::Device::new_cuda(index).map_err(|source| match source {
                candle_core::Error::NotCompiledWithCudaSupport => DeviceError::NotCompiledWithCuda { spec: self },
                // candle attaches a backtrace under RUST_BACKTRACE; the
                // driver's error is what a user can act on.
                candle_core::Error::WithBacktrace { inner, .. } => DeviceError::Unavailable {
                    spec: self,
                    source: inner,
                },
                source => DeviceError::Unavailable {
                    spec: self,
                    source: Box::new(source),
                },
            }),
        }
    }
}

/// What a model uploads to a device (a compiled tree program, a layer's
/// weights), made on first use there and kept with the model, so that it is
/// uploaded once per device, not once per block.
pub struct PerDevice<U: ?Sized + Send + Sync>(Mutex<Vec<(candle_core::Device, Arc<U>)>>);

impl<U: ?Sized + Send + Sync> Default for PerDevice<U> {
    fn default() -> Self {
        PerDevice(Mutex::new(Vec::new()))
    }
}

impl<U: ?Sized + Send + Sync> fmt::Debug for PerDevice<U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let copies = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("PerDevice").field("devices", &copies.len()).finish()
    }
}

impl<U: ?Sized + Send + Sync> PerDevice<U> {
    /// The copy on `device`, made by `upload` the first time. The device is
    /// synchronised before the copy is shared: candle queues each host
    /// thread's GPU work on that thread's own stream, and the other workers'
    /// streams are not ordered after it.
    pub fn get_or_upload(
        &self,
        device: &candle_core::Device,
        upload: impl FnOnce() -> candle_core::Result<Arc<U>>,
    ) -> candle_core::Result<Arc<U>> {
        // Held across the upload: two blocks on one device upload once.
        let mut copies = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, copy)) = copies.iter().find(|(on, _)| on.same_device(device)) {
            return Ok(copy.clone());
        }
        let copy = upload()?;
        device.synchronize()?;
        copies.push((device.clone(), copy.clone()));
        Ok(copy)
    }
}

/// For the tests' CUDA twins: GPU 0, or `None` (the test then passes with a
/// note) where none opens, unless `LAKESCORE_TEST_REQUIRE_GPU` is set (the
/// GPU check sets it), where that is a failure.
#[doc(hidden)]
pub fn gpu_for_tests() -> Option<candle_core::Device> {
    match candle_core::Device::new_cuda(0) {
        Ok(device) => Some(device),
        Err(error) if std::env::var_os("LAKESCORE_TEST_REQUIRE_GPU").is_some() => {
            panic!("LAKESCORE_TEST_REQUIRE_GPU is set, but no GPU opened: {error}")
        }
        Err(error) => {
            eprintln!("skipped on CUDA: no GPU ({error})");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!("cpu".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!("cuda".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(3));
        let error = "gpu".parse::<DeviceSpec>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "`gpu` is not a device; expected `cpu`, `cuda` or `cuda:N`"
        );
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
    }

    #[test]
    fn cuda_without_the_feature_is_a_usage_error() {
        if candle_core::utils::cuda_is_available() {
            return;
        }
        let error = DeviceSpec::Cuda(0).open().unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot use `cuda:0`: lakescore was built without CUDA support; rebuild with `--features cuda`"
        );
        assert!(error.is_usage());
    }
}
