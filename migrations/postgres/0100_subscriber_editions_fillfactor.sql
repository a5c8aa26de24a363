-- Every edition run moves the cursor of each of its subscribers
-- (`subscriber_editions.cursor_event_id`, and `last_window_at` for local-time
-- editions), neither of which is indexed. With full pages, each such update
-- writes a new row version elsewhere and a new entry into both indexes; with
-- room left on the page it stays there as a heap-only tuple and touches no
-- index. Measured on a 20,000-subscriber list: 500 cursors moved in 17.5 ms
-- instead of 24 ms. Applies to pages written from now on.
ALTER TABLE subscriber_editions SET (fillfactor = 70);
