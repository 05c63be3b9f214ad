build-asan/src/daemon/master.o: src/daemon/master.c src/daemon/master.h \
 src/auth/password.h src/base/file.h src/base/log.h src/base/counter.h \
 src/base/privs.h src/daemon/worker.h src/event/config.h \
 src/directory/directory.h src/tls/tls.h
src/daemon/master.h:
src/auth/password.h:
src/base/file.h:
src/base/log.h:
src/base/counter.h:
src/base/privs.h:
src/daemon/worker.h:
src/event/config.h:
src/directory/directory.h:
src/tls/tls.h:
