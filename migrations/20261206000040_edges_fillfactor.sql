-- Re-reports are most of what agents send (issue 19, item 5): each one rewrites an edge's
-- last_seen and counters, none of its indexed columns. With room left on each page, PostgreSQL
-- writes the new version beside the old one (a HOT update) and touches none of the three
-- indexes; on full pages every update moves the row and inserts into all three. Half of each
-- page is kept free when rows are inserted.
ALTER TABLE edges SET (fillfactor = 50);
