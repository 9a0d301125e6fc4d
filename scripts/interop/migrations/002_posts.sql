CREATE TABLE {{tables.posts}} (
    id SERIAL PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES {{tables.users}} (id),
    body TEXT NOT NULL
);
CREATE INDEX posts_user_idx ON {{tables.posts}} (user_id);
