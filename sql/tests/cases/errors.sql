-- Each case: the input, a line `=>` and `line:column: fragment of the message`. Blank lines separate cases.

SELECT * FROM;
=>
1:14: expected an identifier, found ';'

SELECT a,
  b c d
FROM s;
=>
2:7: expected FROM, found 'd'

CREATE STREAM s (id INT KEY) WITH (kafka_topic='t') extra;
=>
1:53: expected ';' or the end of input, found 'extra'

CREATE TABLE t (id INT KEY, v STRING) WITH (kafka_topic='t', value_format='JSON');
=>
1:17: Column `ID` is a 'KEY' column: please use 'PRIMARY KEY' for tables.

CREATE STREAM s (id INT PRIMARY KEY) WITH (kafka_topic='t', value_format='JSON');
=>
1:18: Column `ID` is a 'PRIMARY KEY' column: please use 'KEY' for streams.

SELECT 9223372036854775808 FROM s;
=>
1:8: Invalid numeric literal: 9223372036854775808

SELECT -9223372036854775809 FROM s;
=>
1:8: Invalid numeric literal: -9223372036854775809

SELECT 1.7976931348623159E308 FROM s;
=>
1:8: Number overflows DOUBLE

SELECT CAST(a AS NULL) FROM s;
=>
1:18: expected a type, found 'NULL'

SELECT * FROM s WHERE id IN ();
=>
1:30: expected an expression, found ')'

SELECT 'unterminated FROM s;
=>
1:8: Syntax Error

ASSERT VALUES foo (id INT) VALUES (123);
=>
1:8: Syntax error at or near 'VALUES'

RUN SCRIPT 'foo.sql';
=>
1:1: Unknown statement 'RUN'

CREATE TABLE t (k STRING PRIMARY KEY) WITH (kafka_topic='t', value_format='JSON', window_type='Session', window_size='1 second');
=>
1:106: 'WINDOW_SIZE' should not be set for SESSION windows.

SELECT * FROM s WINDOW TUMBLING (SIZE 10 FORTNIGHTS);
=>
1:42: expected a time unit

SELECT ARRAY[1, 2 FROM s;
=>
1:19: expected ',' or ']', found 'FROM'

SELECT a FROM s ORDER BY a NULLS;
=>
1:33: expected FIRST or LAST after NULLS

CREATE STREAM o AS SELECT * FROM s PARTITION BY ();
=>
1:49: PARTITION BY requires at least one expression
