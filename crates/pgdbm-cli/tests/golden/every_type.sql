-- The table behind tests/golden/every_type.rs: one column of every type `pgdbm generate model`
-- maps, plus a nullable column, arrays, an enum, a type without a mapping, and column names
-- that are not Rust identifiers. Regenerate the golden file with
--   pgdbm generate model every_type > crates/pgdbm-cli/tests/golden/every_type.rs
CREATE TYPE mood AS ENUM ('ok', 'sad');
CREATE TABLE every_type (
    id int8 PRIMARY KEY,
    flag bool NOT NULL,
    small int2 NOT NULL,
    medium int4 NOT NULL,
    big int8 NOT NULL,
    real_ float4 NOT NULL,
    double float8 NOT NULL,
    an_oid oid NOT NULL,
    body text NOT NULL,
    label varchar(20) NOT NULL,
    code char(3) NOT NULL,
    ident name NOT NULL,
    one_byte "char" NOT NULL,
    raw bytea NOT NULL,
    ref uuid NOT NULL,
    doc json NOT NULL,
    docb jsonb NOT NULL,
    at_local timestamp NOT NULL,
    created_at timestamptz NOT NULL,
    day date NOT NULL,
    clock time NOT NULL,
    amount numeric(12, 2) NOT NULL,
    addr inet NOT NULL,
    net cidr NOT NULL,
    span interval NOT NULL,
    note text,
    tags text[] NOT NULL,
    scores int4[],
    m mood NOT NULL,
    pos point,
    "type" text NOT NULL,
    "Weird Name" int4 NOT NULL
);
INSERT INTO every_type VALUES (
    1, true, 2, 3, 4, 1.5, 2.25, 42, 'body', 'label', 'abc', 'ident', 'x', '\x0102',
    'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{"a": 1}', '{"b": [true]}',
    '2024-01-02 03:04:05', '2024-01-02 03:04:05+00', '2024-01-02', '03:04:05',
    '1234.50', '192.168.0.1', '10.0.0.0/8', '1 day 2 hours',
    NULL, '{x,y}', '{1,2}', 'sad', '(1,2)', 'kind', 7
);
