//! Page tokens (`stockmesh::pagination`): whatever a client sends as `page_size` and
//! `page_token`, parsing never panics and answers INVALID_ARGUMENT naming the field; a
//! token the list issued parses back to the same position.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use stockmesh::pagination::{MAX_PAGE_SIZE, Page};

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    page_size: i32,
    token: &'a str,
    filters: Vec<&'a str>,
    /// Ids of the rows a list fetched, to issue a next-page token from.
    rows: Vec<&'a str>,
}

fuzz_target!(|input: Input<'_>| {
    match Page::parse(input.page_size, input.token, &input.filters) {
        Err(status) => {
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            let field = status.message().split(':').next().unwrap_or_default();
            assert!(
                field == "page_size" || field == "page_token",
                "{}",
                status.message()
            );
        }
        Ok(page) => {
            assert!((1..=MAX_PAGE_SIZE).contains(&page.size));
            assert_eq!(page.fetch_limit(), page.size + 1);
            // Round trip: the token after the page's last row leads back to it.
            let mut rows: Vec<String> = input.rows.iter().map(|r| r.to_string()).collect();
            let next = page.finish(&mut rows, |r| r.as_str());
            assert!(rows.len() as u64 <= page.size);
            if !next.is_empty() {
                let again = Page::parse(input.page_size, &next, &input.filters)
                    .expect("a token the list issued parses");
                assert_eq!(again.after.as_deref(), rows.last().map(String::as_str));
                // …and only for the same filters.
                let mut other = input.filters.clone();
                other.push("another filter");
                assert!(Page::parse(input.page_size, &next, &other).is_err());
            }
        }
    }
});
