build-asan/src/smtp/smtp_server.o: src/smtp/smtp_server.c \
 src/smtp/smtp_server.h src/msg/addr.h src/smtp/smtp_parse.h \
 src/base/buf.h src/base/counter.h src/base/log.h src/msg/dotstuff.h \
 src/auth/sasl.h
src/smtp/smtp_server.h:
src/msg/addr.h:
src/smtp/smtp_parse.h:
src/base/buf.h:
src/base/counter.h:
src/base/log.h:
src/msg/dotstuff.h:
src/auth/sasl.h:
