//! Every platform but Linux: ci-janitor reads `/proc` and signals through pidfds, neither
//! of which exists elsewhere. The functions exist so the crate builds; each says so.

compile_error!(
    "ci-janitor supports Linux only for now: it reads /proc and signals through pidfds. \
     macOS and Windows runners are not supported (see README, 'Platforms')."
);
