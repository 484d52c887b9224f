-- Traffic volume on edges: bytes from the client to the target (bytes_sent) and back
-- (bytes_received), from the client's side. NULL when not measured (the /proc fallback, older
-- agents); ingest merges them by saturating sums (at 2^63 - 1) where NULL + x = x.
ALTER TABLE edges
    ADD COLUMN bytes_sent     bigint CHECK (bytes_sent >= 0),
    ADD COLUMN bytes_received bigint CHECK (bytes_received >= 0);
