//! Watching the service's `outbox` from the database side, with triggers (no hooks in
//! the code under test):
//!
//! * [`OutboxLog`]: an AFTER INSERT trigger copies every outbox row into `seen_events`,
//!   so a test reads exactly the events that committed (a rolled-back transaction takes
//!   its copy with it), even after the relay published and deleted the outbox rows.
//! * [`fail_outbox`] / [`heal_outbox`]: a BEFORE INSERT trigger that raises, so the
//!   transaction of a change fails after the change's own statements and before commit.

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
};

/// A connection of one session to `url`, for changing the schema: every statement on it
/// sees the schema the previous one left (a pool may answer from a session whose view of
/// a just-dropped trigger is stale).
pub async fn schema_session(url: &str) -> DatabaseConnection {
    let mut opts = ConnectOptions::new(url.to_string());
    opts.max_connections(1)
        .min_connections(1)
        .sqlx_logging(false);
    Database::connect(opts)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

/// The events that committed in one service's database since [`OutboxLog::install`].
pub struct OutboxLog {
    db: DatabaseConnection,
}

/// One logged event: its id, topic subject (e.g. `inventory.stock_changed`) and payload.
#[derive(Debug, Clone)]
pub struct Logged {
    pub event_id: String,
    pub topic: String,
    pub payload: Vec<u8>,
}

impl OutboxLog {
    pub async fn install(db: DatabaseConnection) -> Self {
        let statements: &[&str] = match db.get_database_backend() {
            DbBackend::Postgres => &[
                "CREATE TABLE seen_events (n BIGSERIAL PRIMARY KEY, event_id TEXT NOT NULL, \
                 topic TEXT NOT NULL, payload BYTEA NOT NULL)",
                "CREATE FUNCTION seen_events_copy() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN INSERT INTO seen_events (event_id, topic, payload) \
                 VALUES (NEW.event_id, NEW.topic, NEW.payload); RETURN NEW; END $$",
                "CREATE TRIGGER seen_events_copy AFTER INSERT ON outbox \
                 FOR EACH ROW EXECUTE FUNCTION seen_events_copy()",
            ],
            _ => &[
                "CREATE TABLE seen_events (n INTEGER PRIMARY KEY AUTOINCREMENT, \
                 event_id TEXT NOT NULL, topic TEXT NOT NULL, payload BLOB NOT NULL)",
                "CREATE TRIGGER seen_events_copy AFTER INSERT ON outbox BEGIN \
                 INSERT INTO seen_events (event_id, topic, payload) \
                 VALUES (NEW.event_id, NEW.topic, NEW.payload); END",
            ],
        };
        for sql in statements {
            db.execute_unprepared(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        Self { db }
    }

    /// Every logged event, in commit order of their rows.
    pub async fn all(&self) -> Vec<Logged> {
        let rows = self
            .db
            .query_all_raw(Statement::from_string(
                self.db.get_database_backend(),
                "SELECT event_id, topic, payload FROM seen_events ORDER BY n",
            ))
            .await
            .unwrap_or_else(|e| panic!("read seen_events: {e}"));
        rows.into_iter()
            .map(|r| Logged {
                event_id: r.try_get("", "event_id").unwrap_or_default(),
                topic: r.try_get("", "topic").unwrap_or_default(),
                payload: r.try_get("", "payload").unwrap_or_default(),
            })
            .collect()
    }

    /// The logged events of `topic` after the first `skip` events (of any topic),
    /// decoded as `M`.
    pub async fn since<M: prost::Message + Default>(&self, skip: usize, topic: &str) -> Vec<M> {
        self.all()
            .await
            .into_iter()
            .skip(skip)
            .filter(|l| l.topic == topic)
            .map(|l| M::decode(&l.payload[..]).unwrap_or_else(|e| panic!("decode: {e}")))
            .collect()
    }

    /// How many events are logged.
    pub async fn len(&self) -> usize {
        self.all().await.len()
    }

    pub async fn is_empty(&self) -> bool {
        self.len().await == 0
    }
}

/// Makes every insert into `outbox` fail ("injected").
pub async fn fail_outbox(db: &DatabaseConnection) {
    let statements: &[&str] = match db.get_database_backend() {
        DbBackend::Postgres => &[
            "CREATE FUNCTION outbox_fail() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN RAISE EXCEPTION 'injected'; END $$",
            "CREATE TRIGGER outbox_fail BEFORE INSERT ON outbox \
             FOR EACH ROW EXECUTE FUNCTION outbox_fail()",
        ],
        _ => &["CREATE TRIGGER outbox_fail BEFORE INSERT ON outbox BEGIN \
                SELECT RAISE(ABORT, 'injected'); END"],
    };
    for sql in statements {
        db.execute_unprepared(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

/// Undoes [`fail_outbox`].
pub async fn heal_outbox(db: &DatabaseConnection) {
    let statements: &[&str] = match db.get_database_backend() {
        DbBackend::Postgres => &[
            "DROP TRIGGER outbox_fail ON outbox",
            "DROP FUNCTION outbox_fail()",
        ],
        _ => &["DROP TRIGGER outbox_fail"],
    };
    for sql in statements {
        db.execute_unprepared(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}
