CREATE TABLE {{tables.orders}} (
    id         bigserial PRIMARY KEY,
    user_id    bigint NOT NULL,
    placed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE {{tables.order_lines}} (
    order_id bigint NOT NULL REFERENCES {{tables.orders}} (id) ON DELETE CASCADE,
    sku      text NOT NULL,
    quantity integer NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, sku)
);
