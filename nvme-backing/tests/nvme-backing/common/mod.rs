//! Shared by the test binaries: run one test body in every fault mode.

/// For each `name` (a function taking a [`nvme_backing::FaultMode`]), defines the tests
/// `signal::name` and `userfaultfd::name`, so a behaviour is checked in both modes from one body
/// (`cargo test -p nvme-backing userfaultfd::` runs the userfaultfd half).
macro_rules! in_both_modes {
    ($($name:ident),* $(,)?) => {
        mod signal {
            $(
                #[test]
                fn $name() {
                    super::$name(nvme_backing::FaultMode::Signal)
                }
            )*
        }
        mod userfaultfd {
            $(
                #[test]
                fn $name() {
                    super::$name(nvme_backing::FaultMode::Userfaultfd)
                }
            )*
        }
    };
}
