-- The billing module's own table, in whichever schema the host gives it.
CREATE TABLE {{tables.invoices}} (
    id serial PRIMARY KEY,
    customer text NOT NULL,
    amount_cents integer NOT NULL CHECK (amount_cents > 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
