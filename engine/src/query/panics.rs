//! A panic inside a query's task (a bug, or a library that panics on input it did not expect)
//! becomes that query's error: the task ends as a failed query does, shown in `SHOW QUERIES`
//! with its cause, instead of vanishing while the query still looks as if it ran.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

/// Runs `work`, returning what a panic inside it said instead of unwinding further.
pub(crate) async fn catching_panics<F: Future>(work: F) -> Result<F::Output, String> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_string());
            format!("the query's task failed unexpectedly ({why}); this is a bug in Eddy")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_returned_as_the_tasks_error() {
        let answer = catching_panics(async { 42 }).await;
        assert_eq!(answer, Ok(42));
        let failed = catching_panics(async {
            let divisor = std::hint::black_box(0);
            1 / divisor
        })
        .await
        .unwrap_err();
        assert!(failed.contains("divide by zero"), "{failed}");
    }
}
