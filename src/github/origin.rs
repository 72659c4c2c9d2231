//! Where a leak comes from, as a file and a line for a check-run annotation: the test that
//! started it (`PYTEST_CURRENT_TEST`: `tests/test_api.py::TestX::test_y[1] (call)`, found
//! in the source as `def test_y`), else the step in the workflow file, else the workflow
//! file itself.

/// `(file, function)` of a pytest node id.
pub fn test_parts(test: &str) -> Option<(&str, &str)> {
    let id = test.rsplit_once(" (").map_or(test, |(id, _)| id);
    let (file, rest) = id.split_once("::")?;
    let func = rest.rsplit("::").next()?;
    let func = func.split_once('[').map_or(func, |(f, _)| f);
    let plausible = !file.is_empty()
        && !file.starts_with('/')
        && !file.split('/').any(|c| c == "..")
        && !file.contains(char::is_whitespace)
        && !func.is_empty();
    plausible.then_some((file, func))
}

/// The 1-based line of `def func(` (or `async def`) in `source`.
pub fn def_line(source: &str, func: &str) -> Option<u32> {
    source.lines().zip(1u32..).find_map(|(line, n)| {
        let l = line.trim_start();
        let l = l.strip_prefix("async ").unwrap_or(l);
        let rest = l.strip_prefix("def ")?.trim_start().strip_prefix(func)?;
        rest.trim_start().starts_with('(').then_some(n)
    })
}

/// The 1-based line of a step in a workflow file: its `id:`, else its `name:`.
pub fn step_line(workflow: &str, id: &str, name: Option<&str>) -> Option<u32> {
    let find = |key: &str, value: &str| {
        workflow.lines().zip(1u32..).find_map(|(line, n)| {
            let l = line.trim_start().trim_start_matches("- ").trim_start();
            let v = l.strip_prefix(key)?.trim();
            (v.trim_matches(|c| c == '"' || c == '\'') == value).then_some(n)
        })
    };
    find("id:", id).or_else(|| name.and_then(|n| find("name:", n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tests_and_steps_are_found_in_their_files() {
        assert_eq!(
            test_parts("tests/test_api.py::TestX::test_y[1-a] (call)"),
            Some(("tests/test_api.py", "test_y"))
        );
        assert_eq!(
            test_parts("tests/t.py::test_z (setup)"),
            Some(("tests/t.py", "test_z"))
        );
        assert_eq!(test_parts("/etc/passwd::x (call)"), None);
        assert_eq!(test_parts("../x.py::t (call)"), None);
        let src = "import x\n\nclass TestX:\n    async def test_y(self):\n        pass\ndef test_yz(): pass\n";
        assert_eq!(def_line(src, "test_y"), Some(4));
        assert_eq!(def_line(src, "test_yz"), Some(6));
        assert_eq!(def_line(src, "nope"), None);
        let wf = "jobs:\n  test:\n    steps:\n      - uses: actions/checkout@v4\n      - name: Run tests\n        id: tests\n        run: pytest\n      - name: Lint\n";
        assert_eq!(step_line(wf, "tests", None), Some(6));
        assert_eq!(step_line(wf, "__run_2", Some("Lint")), Some(8));
        assert_eq!(step_line(wf, "__run_3", None), None);
    }
}
