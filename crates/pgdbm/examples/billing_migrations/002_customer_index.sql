CREATE INDEX invoices_customer_idx ON {{tables.invoices}} (customer);
