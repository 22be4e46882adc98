//! Running one test suite once per backend: the embedded default, RabbitMQ
//! with classic queues, and RabbitMQ with quorum queues.

/// Expands each listed `async fn NAME(backend: Backend, ...)` into a
/// `#[tokio::test]` per backend, in a module named after it: `embedded`,
/// `real`, `quorum`. The backends needing services are compiled only with
/// the `services` feature.
///
/// ```text
/// on_every_backend!(a_test, another_test);
/// // Other backends, or arguments after the backend (a request ID base, say):
/// on_every_backend!(with [embedded: Embedded(1_000), real: Real(2_000)] a_test);
/// ```
#[macro_export]
macro_rules! on_every_backend {
    (with [$($backends:tt)*] $($test:ident),* $(,)?) => {
        $crate::__backend_tests!(@each [$($test),*] $($backends)*);
    };
    ($($test:ident),* $(,)?) => {
        $crate::on_every_backend!(with [embedded: Embedded(), real: Real(), quorum: Quorum()] $($test),*);
    };
}

/// One backend's module of [`on_every_backend!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __backend_tests {
    (@each $tests:tt $module:ident: $backend:ident $args:tt $(, $($rest:tt)*)?) => {
        $crate::__backend_tests!($module $backend $args $tests);
        $( $crate::__backend_tests!(@each $tests $($rest)*); )?
    };
    (@each $tests:tt) => {};
    ($module:ident Embedded $args:tt $tests:tt) => {
        mod $module {
            $crate::__backend_tests!(@tests Embedded $args $tests);
        }
    };
    ($module:ident $backend:ident $args:tt $tests:tt) => {
        #[cfg(feature = "services")]
        mod $module {
            $crate::__backend_tests!(@tests $backend $args $tests);
        }
    };
    (@tests $backend:ident $args:tt [$($test:ident),*]) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                $crate::__backend_tests!(@call $test $backend $args).await
            }
        )*
    };
    (@call $test:ident $backend:ident ($($arg:expr),*)) => {
        super::$test($crate::Backend::$backend $(, $arg)*)
    };
}
